"""The payee's MICROPAY service: commitments out, tickets in (SPEC §15, paper §2.1).

The interactive exchange of MICROPAY1, over HTTP beside the ticket service:

``POST /v1/mp/commitments`` ``{"count": n}`` (1 ≤ n ≤ 256) answers ``{"payee": hex,
"commitments": [hex(c), ...], "price": units, "margin": blocks}``. Each ``c =
H(b"mp-commit", r1)`` for a fresh random 16-byte ``r1`` that is stored durably first. A
batch serves ``n`` payments with one ticket message each — the "merchant sends its first
message ahead of time" variant (paper §2.4 does it with a VUF, which the chain's
MP_CLAIM cannot check; a batch of commitments gives the same single message per payment).

``POST /v1/mp/tickets`` ``{"tickets": [{"mp_escrow_id", "c", "r2", "ticket_sig"}, ...]}``
(at most 256; hex) answers ``{"results": [{"accepted": bool, "reason": str|None,
"r1": hex|None, "won": bool|None, "duplicate": bool}, ...]}`` in request order, after the
answers are durably stored. Reasons: ``unknown-commitment`` (not handed out here, or
pruned), ``commitment-used`` (by another ticket), ``unknown-mp-escrow``,
``mp-escrow-expired`` (a claim could not be included ``margin`` blocks from now),
``bad-ticket-signature``, ``ticket-underpriced`` (expected value ``amount · 2^-win_bits``
below the price), ``mp-escrow-spent`` (this payee already holds the escrow's winner).

Every ticket that names an open commitment uses it up, accepted or not, and the answer
reveals ``r1``: the payer sees whether the ticket won (``r1 XOR r2``), so it knows whether
the escrow is spent before it signs another ticket on it — the sequential rule of
MICROPAY that MicroCash removes. Revealing ``r1`` costs nothing: a losing ticket can never
be claimed, a winning one only by this payee (the signature binds it). A re-delivered
ticket (same escrow, ``c``, ``r2``, signature) gets its first answer again.

``GET /v1/mp/status`` answers ``MpStore.summary()``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from fractions import Fraction
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from consensus.errors import ConsensusError
from consensus.micropay import (R_SIZE, MpEscrowState, MpTicket, compute_mp_commitment,
                                compute_mp_expected_value, is_mp_winning,
                                verify_mp_ticket_for_payee)
from wallet.merchant.chainview import ChainView, NodeError
from wallet.merchant.mp_store import HELD, WINNING, MpStore, TicketOutcome

log = logging.getLogger(__name__)

MAX_BATCH = 256  # commitments per request, tickets per request
MAX_BODY = 300 * MAX_BATCH + 1024  # bytes; one ticket is about 290 in JSON
MAX_ESCROWS_PER_REQUEST = 64  # distinct MP escrows looked up per ticket request
MAX_OPEN_COMMITMENTS = 100_000  # handed out and not used yet; older ones are pruned first
COMMITMENT_TTL = 3600.0  # seconds an unused commitment is kept once the cap is reached
DEFAULT_CLAIM_MARGIN = 2  # blocks a claim is given to confirm before refund_height - 1


class MpRequestError(Exception):
    """A malformed request (HTTP 400, or ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _hex(value: Any, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise MpRequestError(f"{what} must be {2 * size} hex digits")
    return raw


def _json(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise MpRequestError("body is not JSON (or nested too deeply)") from None
    if not isinstance(doc, dict):
        raise MpRequestError("body must be a JSON object")
    return doc


def parse_commitment_request(body: bytes) -> int:
    """The count of ``POST /v1/mp/commitments``; raises ``MpRequestError``."""
    count = _json(body).get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BATCH:
        raise MpRequestError(f"count must be an integer 1..{MAX_BATCH}")
    return count


def parse_ticket_request(body: bytes) -> list[MpTicket]:
    """The tickets of ``POST /v1/mp/tickets`` (module docstring); raises ``MpRequestError``."""
    items = _json(body).get("tickets")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise MpRequestError(f"tickets must be a list of 1..{MAX_BATCH} objects")
    tickets = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MpRequestError(f"tickets[{i}] is not an object")
        tickets.append(MpTicket(_hex(item.get("mp_escrow_id"), 32, f"tickets[{i}].mp_escrow_id"),
                                _hex(item.get("c"), 32, f"tickets[{i}].c"),
                                _hex(item.get("r2"), R_SIZE, f"tickets[{i}].r2"),
                                _hex(item.get("ticket_sig"), 64, f"tickets[{i}].ticket_sig")))
    return tickets


def ticket_json(ticket: MpTicket) -> dict[str, str]:
    """One ticket as ``POST /v1/mp/tickets`` carries it."""
    return {"mp_escrow_id": ticket.mp_escrow_id.hex(), "c": ticket.c.hex(),
            "r2": ticket.r2.hex(), "ticket_sig": ticket.ticket_sig.hex()}


def _answer(accepted: bool, reason: str | None, r1: bytes | None, won: bool | None,
            duplicate: bool = False) -> dict[str, Any]:
    return {"accepted": accepted, "reason": reason, "r1": None if r1 is None else r1.hex(),
            "won": won, "duplicate": duplicate}


class MpService:
    """MICROPAY commitments and tickets for the payee ``payee_pubkey`` (module docstring).

    ``price`` (units) is the least expected value a ticket must carry; ``margin`` (blocks)
    how long before the escrow's last claimable height (``refund_height - 1``) tickets
    are refused. ``claims`` counts new winners, so the claimer acts at once.
    """

    def __init__(self, payee_pubkey: bytes, store: MpStore, view: ChainView, *,
                 price: int = 0, margin: int = DEFAULT_CLAIM_MARGIN) -> None:
        if price < 0 or margin < 0:
            raise ValueError("price and margin must be >= 0")
        self.payee_pubkey = payee_pubkey
        self.store = store
        self._view = view
        self.price = price
        self.margin = margin
        self.lock = trio.Lock()  # one ticket request checks-and-writes at a time
        self.claims = 0
        self.wake = trio.Event()  # set when a new winner is stored

    async def commitments(self, count: int) -> dict[str, Any]:
        """Hand out ``count`` fresh commitments, their secrets stored first. Raises
        ``MpRequestError`` 503 when ``MAX_OPEN_COMMITMENTS`` are open even after pruning
        those older than ``COMMITMENT_TTL``."""
        if self.store.open_commitments + count > MAX_OPEN_COMMITMENTS:
            dropped = await trio.to_thread.run_sync(self.store.prune_commitments,
                                                    time.time() - COMMITMENT_TTL)
            log.info("pruned %d unused commitments older than %g s", dropped, COMMITMENT_TTL)
            if self.store.open_commitments + count > MAX_OPEN_COMMITMENTS:
                raise MpRequestError("too many open commitments; try later", 503)
        secrets = [os.urandom(R_SIZE) for _ in range(count)]
        await trio.to_thread.run_sync(self.store.add_commitments, secrets)
        return {"payee": self.payee_pubkey.hex(), "price": self.price, "margin": self.margin,
                "commitments": [compute_mp_commitment(r1).hex() for r1 in secrets]}

    async def submit(self, tickets: list[MpTicket]) -> dict[str, Any]:
        """Check, store and answer a batch of tickets (module docstring). Raises
        ``NodeError`` when the node cannot supply an escrow (nothing is stored then)."""
        escrows: dict[bytes, MpEscrowState | None] = {}
        for ticket in tickets:  # the first MAX_ESCROWS_PER_REQUEST distinct ones; the rest
            if ticket.mp_escrow_id not in escrows:  # are unknown-mp-escrow (bounds RPC load)
                if len(escrows) >= MAX_ESCROWS_PER_REQUEST:
                    break
                escrows[ticket.mp_escrow_id] = await self._view.mp_escrow(ticket.mp_escrow_id)
        t = await self._view.height(fresh=True)
        async with self.lock:
            answers, outcomes = await trio.to_thread.run_sync(self._judge, tickets, escrows, t)
            if outcomes:
                await trio.to_thread.run_sync(self.store.record, outcomes)
        won = sum(1 for o in outcomes if o.verdict == WINNING)
        if won:
            self.claims += won
            self.wake.set()
            self.wake = trio.Event()
        log.info("MICROPAY: %d tickets answered, %d accepted, %d winning", len(tickets),
                 sum(1 for a in answers if a["accepted"] and not a["duplicate"]), won)
        return {"results": answers}

    def _judge(self, tickets: list[MpTicket], escrows: dict[bytes, MpEscrowState | None],
               t: int) -> tuple[list[dict[str, Any]], list[TicketOutcome]]:
        """The answer of each ticket and what to store (runs in a worker thread, under
        ``lock``): the checks in the order of the module docstring."""
        genesis = self._view.genesis_hash
        answers: list[dict[str, Any]] = []
        outcomes: list[TicketOutcome] = []
        seen: dict[bytes, tuple[MpTicket, dict[str, Any]]] = {}  # c -> earlier in request
        spent = set()  # escrows whose winner this request found
        for ticket in tickets:
            c = ticket.c
            stored = self.store.ticket(c)
            if stored is not None:
                answers.append(_answer(stored.accepted, None if stored.accepted
                                       else stored.verdict, stored.r1,
                                       stored.verdict == WINNING if stored.accepted else None,
                                       duplicate=True) if stored.ticket == ticket
                               else _answer(False, "commitment-used", stored.r1, None))
                continue
            if c in seen:
                first, answer = seen[c]
                answers.append({**answer, "duplicate": True} if first == ticket
                               else _answer(False, "commitment-used", None, None))
                continue
            r1 = self.store.commitment_secret(c)
            if r1 is None:
                answers.append(_answer(False, "unknown-commitment", None, None))
                continue
            escrow = escrows.get(ticket.mp_escrow_id)
            reason = self._refusal(genesis, escrow, ticket, t, spent)
            if reason is not None:
                outcomes.append(TicketOutcome(ticket, r1, reason, escrow))
                answers.append(_answer(False, reason, r1, None))
            else:
                won = is_mp_winning(r1, ticket.r2, escrow.win_bits)
                if won:
                    spent.add(ticket.mp_escrow_id)
                outcomes.append(TicketOutcome(ticket, r1, WINNING if won else HELD, escrow))
                answers.append(_answer(True, None, r1, won))
            seen[c] = (ticket, answers[-1])
        return answers, outcomes

    def _refusal(self, genesis: bytes, escrow: MpEscrowState | None, ticket: MpTicket, t: int,
                 spent: set[bytes]) -> str | None:
        try:
            verify_mp_ticket_for_payee(genesis, escrow, ticket, self.payee_pubkey, ticket.c,
                                       t + 1, self.margin)
        except ConsensusError as exc:
            return exc.reason
        if compute_mp_expected_value(escrow.amount, escrow.win_bits) < Fraction(self.price):
            return "ticket-underpriced"
        held = self.store.escrow(ticket.mp_escrow_id)
        if ticket.mp_escrow_id in spent or (held is not None and held.winner_c is not None):
            return "mp-escrow-spent"
        return None

    def status(self) -> dict[str, Any]:
        """``MpStore.summary()`` plus the price and margin."""
        return {**self.store.summary(), "price": self.price, "margin": self.margin}

    # ---- HTTP --------------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise MpRequestError("Content-Type must be application/json", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise MpRequestError(f"body over {MAX_BODY} bytes", 413)
        return body

    async def _post_commitments(self, request: Request) -> JSONResponse:
        try:
            return JSONResponse(await self.commitments(
                parse_commitment_request(await self._body(request))))
        except MpRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def _post_tickets(self, request: Request) -> JSONResponse:
        try:
            return JSONResponse(await self.submit(parse_ticket_request(await self._body(request))))
        except MpRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except NodeError as exc:
            log.warning("cannot check MICROPAY tickets, node unavailable: %s", exc)
            return JSONResponse({"error": f"node unavailable: {exc}"}, status_code=503)

    async def _get_status(self, request: Request) -> JSONResponse:
        return JSONResponse(await trio.to_thread.run_sync(self.status))

    def routes(self) -> list[Route]:
        """``POST /v1/mp/commitments``, ``POST /v1/mp/tickets``, ``GET /v1/mp/status``."""
        return [Route("/v1/mp/commitments", self._post_commitments, methods=["POST"]),
                Route("/v1/mp/tickets", self._post_tickets, methods=["POST"]),
                Route("/v1/mp/status", self._get_status, methods=["GET"])]


def read_mp_status(directory) -> dict[str, Any] | None:
    """``merchant status``'s MICROPAY part from the store at ``directory`` when no service
    answers; None when there is no store. Raises ``MpStoreError`` if it is in use."""
    from pathlib import Path

    if not Path(directory).is_dir():
        return None
    with MpStore(directory) as store:
        return store.summary()


def status_lines(summary: dict[str, Any]) -> list[str]:
    """``merchant status`` text of a ``MpStore.summary()``: totals, then one line per
    escrow."""
    t = summary.get("totals", {})
    lines = [f"micropay: {t.get('held', 0)} tickets held, {t.get('winning', 0)} winning, "
             f"{t.get('claimed', 0)} claimed ({t.get('units_claimed', 0)} units), "
             f"{t.get('won', 0) + t.get('claiming', 0)} claims pending, {t.get('moot', 0)} "
             f"moot, {t.get('expired', 0)} expired, {t.get('failed', 0)} failed; "
             f"{summary.get('open_commitments', 0)} commitments open"]
    for e in summary.get("escrows", []):
        lines.append(f"mp escrow {e['mp_escrow_id']}: {e['held']} held, {e['refused']} "
                     f"refused, {'winner ' + e['status'] if e['winning'] else e['status']}"
                     + (f" ({e['reason']})" if e.get("reason") else "")
                     + f", {e['amount']} units at 2^-{e['win_bits']}")
    return lines
