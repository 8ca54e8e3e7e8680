"""The merchant's ticket service: SPEC §13 over HTTP, with the §4.1 acceptance checks.

``POST /v1/tickets`` takes concatenated 107-byte tickets (at most 10 000) and answers
``{"accepted": n, "rejected": [{"index": i, "reason": r}, ...]}`` only after the accepted
tickets are durably stored. ``GET /v1/status`` returns the counts per escrow.
``GET /v1/terms`` publishes the merchant's terms; a ticket of an escrow outside them is
rejected as ``terms-not-met`` with a ``detail`` naming the term (``wallet.merchant.terms``,
checked after SPEC §4.1 steps 1–2; signed out-of-range tickets stay evidence). With
``ServerTls`` the service speaks HTTPS (``wallet.tlsconfig``).

A request is handled in three phases so that the event loop stays responsive:
1. in order, per ticket, the cheap checks of SPEC §4.1 steps 1–5 against one snapshot of
   the best height (decode, escrow, merchant, duplicate, range, round, draw);
2. the Ed25519 signatures of the survivors (step 6), in a worker thread, in chunks;
3. under a lock: the duplicate and round/draw checks again with a fresh height (another
   request or a new block may have arrived meanwhile), then one synced write batch.
Each ticket's reason is still the first failing check in SPEC §4.1 order.

``run_merchant`` runs this service and the auto-redeemer (``wallet.merchant.redeemer``) in one
nursery; the wallet CLI calls it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import hypercorn.trio
import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consensus.escrow import (EscrowState, compute_group_of_seqno, compute_round_of_seqno,
                              compute_t_draw, compute_t_expire)
from consensus.keys import public_key
from consensus.params import ChainParams
from consensus.ticket import TICKET_SIZE, TICKET_VERSION, Ticket
from wallet.merchant.chainview import ChainView, NodeError, RpcChainView
from wallet.merchant.channel_service import DEFAULT_CLOSE_MARGIN, ChannelService
from wallet.merchant.channel_store import ChannelStore
from wallet.merchant.cheatwatch import CheatWatch
from wallet.merchant.closer import Closer
from wallet.merchant.pos_gossip import PosConfig
from wallet.merchant.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from wallet.merchant.metrics import MerchantMetrics
from wallet.merchant.redeemer import DEFAULT_FEE, Redeemer
from wallet.rpcclient import RpcClient
from wallet.merchant.ticketstore import EVIDENCE_OUT_OF_RANGE, NewTicket, TicketStore
from wallet.merchant.ticketverify import TicketVerifier
from wallet.merchant.terms import CHECKED_BEFORE_TERMS, TermsChecker, terms_route
from wallet.terms import TERMS_NOT_MET, MerchantTerms
from wallet.tlsconfig import ServerTls

log = logging.getLogger(__name__)

MAX_TICKETS_PER_REQUEST = 10_000  # SPEC §13
MAX_BODY_BYTES = MAX_TICKETS_PER_REQUEST * TICKET_SIZE
TICKETS_CONTENT_TYPE = "application/octet-stream"  # SPEC §13
MAX_ESCROWS_PER_REQUEST = 64  # distinct escrow ids looked up per request (bounds RPC load)
CHECKPOINT_EVERY = 256  # tickets pre-checked between event-loop checkpoints
READ_TIMEOUT = 30  # seconds a client may stay silent mid-request before it is dropped


class RequestError(Exception):
    """A request rejected as a whole; ``status`` is the HTTP status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_schedule(params: ChainParams, escrow: EscrowState, seqno: int, t: int) -> str | None:
    """SPEC §4.1 step 5 at best height ``t``: ``wrong-round``, ``draw-revealed`` or None.

    The ticket's round ``start + seqno // tkt_rate`` must lie in ``cur-1 … cur+1`` with
    ``cur = t + 1``, and its group's draw must be unrevealed: ``t_draw(g) + 1 > t``.
    """
    current = t + 1
    if not current - 1 <= compute_round_of_seqno(escrow, seqno) <= current + 1:
        return "wrong-round"
    if not compute_t_draw(params, escrow, compute_group_of_seqno(escrow, seqno)) + 1 > t:
        return "draw-revealed"
    return None


def check_ticket(params: ChainParams, escrow: EscrowState | None, merchant: bytes,
                 ticket: Ticket | TicketFields, t: int, accepted_before: bool,
                 schedule: Callable[[ChainParams, EscrowState, int, int], str | None]
                 = check_schedule) -> str | None:
    """SPEC §4.1 steps 1–5 in order; the §13 reason of the first failure, or None.

    ``merchant`` is this merchant's 32-byte key; ``accepted_before`` says whether
    ``(escrow_id, seqno)`` is already stored; ``schedule`` is step 5 (``check_schedule``,
    or a cached equivalent). Step 6 (the signature) is left to the caller.
    """
    if escrow is None:
        return "unknown-escrow"
    if escrow.broken:
        return "escrow-broken"
    if not (ticket.merchant_index < len(escrow.merchants)
            and escrow.merchants[ticket.merchant_index] == merchant):
        return "wrong-merchant"
    if accepted_before:
        return "duplicate-ticket"
    if ticket.seqno >= escrow.N:
        return "seqno-out-of-range"
    return schedule(params, escrow, ticket.seqno, t)


class _RoundCache:
    """SPEC §4.1 verdicts and store schedules of one request, per (escrow, round).

    Everything ``check_schedule`` and a ``NewTicket`` need of a seqno depends only on its
    round ``seqno // tkt_rate`` (its group is a function of the round), and steps 1-2
    only on the escrow and merchant index, so a request of 10 000 tickets computes them a
    handful of times instead of 10 000 (``check``, ``record``).
    """

    def __init__(self, params: ChainParams, t: int, merchant: bytes) -> None:
        self.params = params
        self.t = t
        self.merchant = merchant  # this merchant's 32-byte key
        self._rounds: dict[tuple[int, int], tuple[str | None, int, int, int, int]] = {}
        self._verdicts: dict[tuple[int, int, int], str | None] = {}

    def _get(self, escrow: EscrowState, seqno: int) -> tuple[str | None, int, int, int, int]:
        key = (id(escrow), seqno // escrow.tkt_rate)  # the request holds each escrow
        found = self._rounds.get(key)
        if found is None:
            g = compute_group_of_seqno(escrow, seqno)
            found = self._rounds[key] = (
                check_schedule(self.params, escrow, seqno, self.t),
                compute_round_of_seqno(escrow, seqno), g,
                compute_t_draw(self.params, escrow, g), compute_t_expire(self.params, escrow, g))
        return found

    def schedule(self, params: ChainParams, escrow: EscrowState, seqno: int,
                 t: int) -> str | None:
        """``check_schedule`` at this request's ``params`` and ``t`` (the arguments are
        the ones ``check_ticket`` passes, the same for the whole request)."""
        return self._get(escrow, seqno)[0]

    def check(self, escrow: EscrowState | None, ticket: TicketFields,
              accepted_before: bool) -> str | None:
        """``check_ticket`` of this request's merchant and ``t``. A ticket not stored and
        with ``seqno < N`` (nearly all) gets the verdict of its (escrow, merchant index,
        round): steps 1, 2 and 5 depend on nothing else, so it is computed once each."""
        if accepted_before or escrow is None or ticket.seqno >= escrow.N:
            return check_ticket(self.params, escrow, self.merchant, ticket, self.t,
                                accepted_before, self.schedule)
        key = (id(escrow), ticket.merchant_index, ticket.seqno // escrow.tkt_rate)
        try:
            return self._verdicts[key]
        except KeyError:
            verdict = self._verdicts[key] = check_ticket(
                self.params, escrow, self.merchant, ticket, self.t, False, self.schedule)
            return verdict

    def record(self, escrow: EscrowState, ticket: TicketFields, raw: bytes) -> NewTicket:
        """The store record of an acceptable ticket (SPEC §3.2 schedule)."""
        _, rnd, g, t_draw, t_expire = self._get(escrow, ticket.seqno)
        return NewTicket(ticket.escrow_id, ticket.seqno, ticket.merchant_index, rnd, g,
                         t_draw, t_expire, raw)


class TicketFields(NamedTuple):
    """The fields of one 107-byte ticket record (SPEC §4), as ``consensus.ticket.Ticket``
    has them; a tuple made by one ``struct`` call, because a request carries up to 10 000.
    ``ticket()`` gives the ``Ticket``."""

    version: int  # u8, always 1
    merchant_index: int  # u16
    escrow_id: bytes  # 32 bytes
    seqno: int  # u64
    sig: bytes  # 64 bytes

    def ticket(self) -> Ticket:
        return Ticket(*self)


_RECORD = struct.Struct(">BH32sQ64s")  # SPEC §4 layout, big-endian, 107 bytes


def parse_ticket_body(body: bytes) -> list[TicketFields | None]:
    """Split a ``POST /v1/tickets`` body into tickets (SPEC §4, §13).

    Returns one entry per 107-byte record: its ``TicketFields``, or ``None`` for a record
    that ``Ticket.decode`` refuses (a version other than 1; rejected as
    ``bad-encoding``). Raises ``RequestError`` 400 when the length is not a multiple of
    107 and 413 for more than 10 000 tickets.
    """
    if len(body) % TICKET_SIZE:
        raise RequestError(400, f"body of {len(body)} bytes is not a whole number of "
                                f"{TICKET_SIZE}-byte tickets")
    count = len(body) // TICKET_SIZE
    if count > MAX_TICKETS_PER_REQUEST:
        raise RequestError(413, f"{count} tickets; at most {MAX_TICKETS_PER_REQUEST} "
                                "per request")
    return [TicketFields._make(fields) if fields[0] == TICKET_VERSION else None
            for fields in _RECORD.iter_unpack(body)]


def check_content_type(value: str | None) -> None:
    """SPEC §13: a ticket request is ``application/octet-stream`` (parameters ignored).

    Raises ``RequestError`` 415 naming what was sent.
    """
    media = (value or "").partition(";")[0].strip().lower()
    if media != TICKETS_CONTENT_TYPE:
        shown = repr(value) if value is not None else "none"
        raise RequestError(415, f"Content-Type must be {TICKETS_CONTENT_TYPE} (SPEC §13), "
                                f"got {shown}")


@dataclass(slots=True)
class _Candidate:
    index: int  # position in the request
    ticket: TicketFields
    escrow: EscrowState
    raw: bytes  # the ticket's 107 bytes
    owner: int  # index of the escrow owner's key in the request's owner list
    new: NewTicket | None = None  # the store record, for a ticket that passed steps 1-5


class _Batch:
    """One request's tickets on their way to the verifier, chunk by chunk (SPEC §4.1 step 6).

    Chunks start verifying while the event loop is still checking the rest of the
    request; ``valid`` holds one result byte per candidate, in ``add`` order.
    """

    def __init__(self, verifier: TicketVerifier, genesis_hash: bytes, count: int,
                 nursery: trio.Nursery) -> None:
        self._verifier = verifier
        self._genesis_hash = genesis_hash
        self._nursery = nursery
        self._chunk = verifier.chunk_size(count)
        self.owners: list[bytes] = []
        self._owner_index: dict[bytes, int] = {}
        self._pending: list[_Candidate] = []
        self._results: list[bytes] = []
        self.sent: list[_Candidate] = []  # every candidate added, in order

    def owner(self, key: bytes) -> int:
        """The index of ``key`` in this request's owner list (added when new)."""
        index = self._owner_index.get(key)
        if index is None:
            index = self._owner_index[key] = len(self.owners)
            self.owners.append(key)
        return index

    def add(self, cand: _Candidate) -> None:
        """Queue ``cand``; a full chunk starts verifying at once."""
        self._pending.append(cand)
        self.sent.append(cand)
        if len(self._pending) >= self._chunk:
            self.flush()

    def flush(self) -> None:
        """Send the pending candidates to the verifier (a no-op when there are none)."""
        if not self._pending:
            return
        chunk, self._pending = self._pending, []
        slot = len(self._results)
        self._results.append(b"")
        self._nursery.start_soon(self._run, slot, bytes(c.owner for c in chunk),
                                 b"".join(c.raw for c in chunk))

    async def _run(self, slot: int, owner_of: bytes, tickets: bytes) -> None:
        self._results[slot] = await self._verifier.verify(
            self._genesis_hash, tuple(self.owners), owner_of, tickets)

    @property
    def valid(self) -> bytes:
        """One result byte (1 valid) per candidate of ``sent``, once the nursery closed."""
        return b"".join(self._results)


class MerchantService:
    """SPEC §13 ticket service for the merchant with key ``merchant_pubkey`` (32 bytes).

    ``store`` records accepted tickets; ``view`` supplies the best height and escrow
    states; ``verifier`` checks signatures (one worker thread when not given).
    ``submit`` is the transport-free core; ``asgi_app`` / ``serve`` put it on HTTP.
    """

    def __init__(self, merchant_pubkey: bytes, store: TicketStore, view: ChainView,
                 verifier: TicketVerifier | None = None,
                 channels: ChannelService | None = None,
                 terms: MerchantTerms | None = None, micropay: Any = None) -> None:
        self.merchant_pubkey = merchant_pubkey
        self.terms = terms or MerchantTerms()  # published at GET /v1/terms
        self._terms = (TermsChecker(self.terms, view.params)  # default terms: accept all
                       if self.terms != MerchantTerms() else None)
        self.channels = channels  # SPEC §16 voucher routes, when the payee takes channels
        self.micropay = micropay  # SPEC §15 routes: a wallet.merchant.mp_service.MpService
        self._store = store
        self._view = view
        self._verifier = verifier or TicketVerifier(1)
        self._accept_lock = trio.Lock()
        self._stored = 0  # accepted-ticket writes so far: tells a request whether to re-check
        self.cheatwatch: CheatWatch | None = None  # automatic cheat proofs (issue 8), if run
        self.metrics = MerchantMetrics(store.summaries)  # GET /metrics

    async def submit(self, body: bytes) -> dict[str, Any]:
        """Check and durably store a batch of tickets (SPEC §4.1, §13).

        ``body`` is concatenated 107-byte tickets. Returns ``{"accepted": n, "rejected":
        [{"index": i, "reason": r}, ...]}`` (rejections by index) after the write is
        synced. Raises ``RequestError`` (400: length not a multiple of 107; 413: more than
        10 000 tickets) and ``NodeError`` when the node cannot supply the chain state.
        """
        parsed = parse_ticket_body(body)
        params = self._view.params
        rejected: dict[int, str] = {}
        details: dict[int, str] = {}  # index -> which term, for terms-not-met
        candidates: list[_Candidate] = []
        out_of_range: list[_Candidate] = []
        t = await self._view.height(fresh=True)
        stored_before = self._stored
        escrows = await self._escrows(parsed)
        stored = await trio.to_thread.run_sync(self._stored_among, parsed, escrows)
        rounds = _RoundCache(params, t, self.merchant_pubkey)
        latest = [t]  # the tip once more, read while the signatures are checked
        rows: list[tuple[bytes, bytes, bytes]] = []  # candidates' store rows, made meanwhile
        async with trio.open_nursery() as nursery:
            batch = _Batch(self._verifier, self._view.genesis_hash, len(parsed), nursery)
            for i, ticket in enumerate(parsed):
                if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    await trio.lowlevel.checkpoint()
                if ticket is None:
                    rejected[i] = "bad-encoding"
                    continue
                eid = ticket.escrow_id
                if eid not in escrows:  # past MAX_ESCROWS_PER_REQUEST distinct escrows
                    rejected[i] = "unknown-escrow"
                    continue
                escrow = escrows[eid]
                reason = rounds.check(escrow, ticket,
                                      bool(stored) and (eid, ticket.seqno) in stored)
                if self._terms is not None and reason not in CHECKED_BEFORE_TERMS:
                    unmet = self._terms.unmet(eid, escrow)  # after steps 1-2, before 3-6
                    if unmet is not None:
                        rejected[i], details[i] = TERMS_NOT_MET, unmet
                        continue
                if reason is not None and reason != "seqno-out-of-range":
                    rejected[i] = reason
                    continue
                raw = body[i * TICKET_SIZE:(i + 1) * TICKET_SIZE]
                cand = _Candidate(i, ticket, escrow, raw, batch.owner(escrow.owner))
                if reason is None:
                    cand.new = rounds.record(escrow, ticket, raw)
                    candidates.append(cand)
                else:
                    rejected[i] = reason
                    out_of_range.append(cand)
                batch.add(cand)
            batch.flush()
            if candidates:
                nursery.start_soon(self._height_now, t, latest)
                nursery.start_soon(self._encode, candidates, rows)
        verdict = {c.index: bool(v) for c, v in zip(batch.sent, batch.valid)}
        await self._keep_evidence(out_of_range, [verdict[c.index] for c in out_of_range])
        accepted = await self._accept(params, candidates,
                                      [verdict[c.index] for c in candidates], t, latest[0],
                                      stored_before, rejected, rows)
        if self.cheatwatch is not None:  # a duplicate in our own store may prove cheating
            dupes = [(body[i * TICKET_SIZE:(i + 1) * TICKET_SIZE], escrows[parsed[i].escrow_id])
                     for i, reason in rejected.items() if reason == "duplicate-ticket"]
            if dupes:
                await self.cheatwatch.own_duplicates(dupes)
        return {"accepted": accepted,
                "rejected": [{"index": i, "reason": rejected[i], "detail": details[i]}
                             if i in details else {"index": i, "reason": rejected[i]}
                             for i in sorted(rejected)]}

    async def _escrows(self, parsed: list[TicketFields | None]) -> dict[bytes, EscrowState | None]:
        """The state of each escrow the request names (the first
        ``MAX_ESCROWS_PER_REQUEST`` distinct ones), ``None`` for unknown ones."""
        escrows: dict[bytes, EscrowState | None] = {}
        for ticket in parsed:
            if ticket is not None and ticket.escrow_id not in escrows:
                if len(escrows) >= MAX_ESCROWS_PER_REQUEST:
                    break
                escrows[ticket.escrow_id] = await self._view.escrow(ticket.escrow_id)
        return escrows

    def _stored_among(self, parsed: list[TicketFields | None],
                      escrows: dict[bytes, EscrowState | None]) -> set[tuple[bytes, int]]:
        """``(escrow_id, seqno)`` of the request's tickets already in the store (§4.1 step 3)."""
        wanted: dict[bytes, list[int]] = {}
        for ticket in parsed:
            if ticket is not None and escrows.get(ticket.escrow_id) is not None:
                wanted.setdefault(ticket.escrow_id, []).append(ticket.seqno)
        return {(eid, seqno) for eid, seqnos in wanted.items()
                for seqno in self._store.stored_among(eid, seqnos)}

    async def _keep_evidence(self, out_of_range: list[_Candidate], valid: list[bool]) -> None:
        """Keep signed out-of-range tickets for a CHEAT_PROOF (SPEC §4.1 step 4, §8)."""
        for cand, ok in zip(out_of_range, valid):
            if not ok:
                continue  # unsigned junk proves nothing; keeping it would let anyone fill the disk
            fresh = await trio.to_thread.run_sync(
                self._store.add_evidence, EVIDENCE_OUT_OF_RANGE, cand.ticket.escrow_id,
                cand.ticket.seqno, [cand.raw], f"seqno {cand.ticket.seqno} >= N {cand.escrow.N}")
            if fresh:
                log.warning("escrow %s: signed out-of-range ticket seqno %d kept as evidence",
                            cand.ticket.escrow_id.hex(), cand.ticket.seqno)
                if self.cheatwatch is not None:
                    self.cheatwatch.evidence_added()

    async def _height_now(self, t: int, latest: list[int]) -> None:
        """Read the best height again into ``latest[0]`` (kept at ``t`` if that fails)."""
        try:
            latest[0] = max(t, await self._view.height(fresh=True))
        except NodeError as exc:
            log.info("height refresh failed, keeping the request's snapshot: %s", exc)

    async def _encode(self, candidates: list[_Candidate],
                      rows: list[tuple[bytes, bytes, bytes]]) -> None:
        """Fill ``rows`` with the candidates' store rows (``TicketStore.encode_tickets``)
        in a thread, while the worker processes check signatures."""
        rows[:] = await trio.to_thread.run_sync(self._store.encode_tickets,
                                                [c.new for c in candidates])

    async def _accept(self, params: ChainParams, candidates: list[_Candidate],
                      valid: list[bool], t: int, now: int, stored_before: int,
                      rejected: dict[int, str], rows: list[tuple[bytes, bytes, bytes]]) -> int:
        """Phase 3: final duplicate/round/draw checks at height ``now`` (read again while
        the signatures were checked), then one synced write of the accepted candidates'
        ``rows`` (one per candidate); the count.

        The store is asked again only if another request stored tickets since this one
        looked (``stored_before``), and the schedule only if the best height moved.
        """
        async with self._accept_lock:
            recheck_store = self._stored != stored_before
            new: list[NewTicket] = []
            kept: list[tuple[bytes, bytes, bytes]] = []  # their rows
            taken: set[tuple[bytes, int]] = set()
            for n, (cand, ok) in enumerate(zip(candidates, valid)):
                if n % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                    await trio.lowlevel.checkpoint()
                ticket, escrow = cand.ticket, cand.escrow
                key = (ticket.escrow_id, ticket.seqno)
                if key in taken or (recheck_store and self._store.contains(*key)):
                    rejected[cand.index] = "duplicate-ticket"
                    continue
                reason = check_schedule(params, escrow, ticket.seqno, now) if now != t else None
                if reason is None and not ok:
                    reason = "bad-ticket-signature"
                if reason is not None:
                    rejected[cand.index] = reason
                    continue
                taken.add(key)
                new.append(cand.new)
                kept.append(rows[n])
            if new:
                try:
                    await trio.to_thread.run_sync(self._store.add_tickets, new, kept)
                finally:
                    self._stored += 1
                if self.cheatwatch is not None:  # announced to the other merchants
                    self.cheatwatch.tickets_accepted(new)
        return len(new)

    def status(self) -> dict[str, dict[str, int]]:
        """``{escrow_id_hex: {held, winning, redeemed, expired, losing, failed, evidence}}``."""
        return {eid.hex(): counts for eid, counts in self._store.summaries().items()}

    # --- HTTP ------------------------------------------------------------------------

    async def _post_tickets(self, request: Request) -> JSONResponse:
        try:
            check_content_type(request.headers.get("content-type"))
            body = await _read_body(request, MAX_BODY_BYTES)
            result = await self.submit(body)
            self.metrics.on_submit(result)
        except RequestError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except NodeError as exc:
            log.warning("cannot check tickets, node unavailable: %s", exc)
            return JSONResponse({"error": f"node unavailable: {exc}"}, status_code=503)
        return JSONResponse(result)

    async def _get_status(self, request: Request) -> JSONResponse:
        return JSONResponse(self.status())

    async def _get_cheats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.cheatwatch.status() if self.cheatwatch is not None
                            else {"proofs": [], "node_watch": False})

    async def _get_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    def asgi_app(self) -> Starlette:
        """The Starlette app with ``POST /v1/tickets`` and ``GET /v1/status`` (SPEC §13),
        ``GET /metrics`` (Prometheus, ``wallet.merchant.metrics``),
        plus ``POST /v1/vouchers`` and ``GET /v1/channels`` with ``channels`` (SPEC §16)."""
        routes = [Route("/v1/tickets", self._post_tickets, methods=["POST"]),
                  Route("/v1/status", self._get_status, methods=["GET"]),
                  terms_route(self.terms, self.merchant_pubkey, self._view.params,
                              self._view.genesis_hash),
                  Route("/v1/cheats", self._get_cheats, methods=["GET"]),
                  Route("/metrics", self._get_metrics, methods=["GET"])]
        if self.channels is not None:
            routes += self.channels.routes()
        if self.micropay is not None:
            routes += self.micropay.routes()
        return Starlette(routes=routes)

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    tls: ServerTls | None = None,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve HTTP (HTTPS with ``tls``) with hypercorn's trio server until cancelled.

        ``port`` 0 picks a free port; ``task_status.started(bound_port)`` reports it.
        """
        config = Config()
        if tls is not None:
            tls.apply(config)
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("wallet.merchant.service.http")
        config.graceful_timeout = 1.0
        config.read_timeout = READ_TIMEOUT
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(
                hypercorn.trio.serve, self.asgi_app(), config))
            bound = int(binds[0].rsplit(":", 1)[1])
            log.info("merchant ticket service on %s", binds[0])
            task_status.started(bound)

    async def run(self, redeemer: Redeemer | None, host: str = "127.0.0.1", port: int = 0, *,
                  closer: Closer | None = None, tls: ServerTls | None = None,
                  claimer: Any = None,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the HTTP service, ``redeemer`` and ``closer`` side by side until cancelled.

        ``task_status.started(bound_port)`` once the service listens.
        """
        async with trio.open_nursery() as nursery:
            if redeemer is not None:
                await nursery.start(redeemer.run)
            if closer is not None:
                await nursery.start(closer.run)
            if self.cheatwatch is not None:
                await nursery.start(self.cheatwatch.run)
            if claimer is not None:  # wallet.merchant.mp_claimer.MpClaimer (SPEC §15)
                await nursery.start(claimer.run)
            bound = await nursery.start(functools.partial(self.serve, host, port, tls=tls))
            task_status.started(bound)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes without buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body over {limit} bytes ({MAX_TICKETS_PER_REQUEST} tickets)")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body over {limit} bytes "
                                        f"({MAX_TICKETS_PER_REQUEST} tickets)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "client disconnected") from None
    return b"".join(chunks)


async def run_merchant(merchant_seed: bytes, merchant_pubkey: bytes, store_dir: Path | str,
                       rpc: RpcClient, host: str = "127.0.0.1", port: int = 0, *,
                       fee: int = DEFAULT_FEE, workers: int = 1,
                       channel_store_dir: Path | str | None = None, channel_price: int = 0,
                       close_margin: int = DEFAULT_CLOSE_MARGIN, cheat_watch: bool = True,
                       terms: MerchantTerms | None = None, tls: ServerTls | None = None,
                       pos: PosConfig | None = None,
                       mp_store_dir: Path | str | None = None, mp_price: int = 0,
                       task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the merchant: ticket service (SPEC §13) + auto-redeemer (SPEC §6, §7), and
    with ``channel_store_dir`` the voucher service + closer (SPEC §16).

    ``store_dir`` is the ticket store's LevelDB directory; ``rpc`` reaches the node;
    ``fee`` is paid by each REDEEM out of its payout; ``workers`` is the number of
    signature-checking worker processes (1: one thread in this process).
    ``channel_price`` (units) is the least increase per voucher, ``close_margin`` the blocks
    before the last closable height at which the closer closes; ``fee`` is also paid by
    each CHANNEL_CLOSE / CHANNEL_CHEAT. ``terms`` are published at ``GET /v1/terms`` and
    enforced (``terms-not-met``); ``tls`` serves HTTPS (docs/DESIGN.md). ``cheat_watch``
    runs the automatic cheat proofs and the duplicate watch between merchants
    (``wallet.merchant.cheatwatch``; ``fee`` paid by each CHEAT_PROOF). ``pos`` makes
    this one point of sale of several (``wallet.merchant.pos_gossip``).
    With ``mp_store_dir`` also the MICROPAY service + claimer (SPEC §15,
    ``wallet.merchant.mp_service``): ``mp_price`` (units) is the least expected value per
    ticket; ``fee`` is paid by each MP_CLAIM too.
    ``task_status.started(port)`` once listening. Raises ``ValueError`` if the seed does
    not belong to ``merchant_pubkey`` or ``workers < 1``,
    ``wallet.merchant.ticketstore.StoreError`` if the store is in use, ``NodeError`` if the node
    cannot be reached at start.
    """
    if public_key(merchant_seed) != merchant_pubkey:
        raise ValueError("merchant seed does not match the merchant public key")
    verifier = TicketVerifier(workers)
    view = await RpcChainView.create(rpc)
    with TicketStore(store_dir) as store, contextlib.ExitStack() as stack:
        channels = closer = None
        if channel_store_dir is not None:
            channel_store = stack.enter_context(ChannelStore(channel_store_dir))
            channels = ChannelService(merchant_pubkey, channel_store, view,
                                      price=channel_price, close_margin=close_margin,
                                      payee_seed=merchant_seed, pos=pos)
            closer = Closer(merchant_seed, channels, view, fee=fee)
        micropay = claimer = None
        if mp_store_dir is not None:  # SPEC §15: commitments, tickets, MP_CLAIMs
            from wallet.merchant.mp_claimer import MpClaimer
            from wallet.merchant.mp_service import MpService
            from wallet.merchant.mp_store import MpStore

            micropay = MpService(merchant_pubkey, stack.enter_context(MpStore(mp_store_dir)),
                                 view, price=mp_price)
            claimer = MpClaimer(merchant_seed, micropay, view, fee=fee)
        await trio.to_thread.run_sync(verifier.start)
        try:
            service = MerchantService(merchant_pubkey, store, view, verifier, channels, terms,
                                      micropay)
            view.send_raw_transaction = service.metrics.count_sends(view.send_raw_transaction)
            if cheat_watch:
                service.cheatwatch = CheatWatch(merchant_seed, store, view, rpc, fee=fee)
            redeemer = Redeemer(merchant_seed, store, view, fee=fee)
            await service.run(redeemer, host, port, closer=closer, tls=tls, claimer=claimer,
                              task_status=task_status)
        finally:
            verifier.close()
