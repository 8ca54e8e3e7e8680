"""The merchant's cheat watch: prove a cheating customer on chain without a hand-made
``cheat report`` (issue 8 points 1 and 2; SPEC §4.1 step 4, §7 step 4, §8; paper §4.5).

A trio task beside the ticket service and the redeemer. It

0. at start, re-announces the tickets it still holds (held or winning), so a restarted
   node knows them again;
1. **subscribes** the merchant's node to every escrow naming this merchant
   (``listescrows {"merchant": ...}``, at start and on each new block) and to the escrows
   of accepted tickets (RPC ``watchescrow``, a 600 s lease renewed every 200 s);
2. **announces** every ticket the service durably accepted (``announcetickets``, ≤ 1000
   per call), so the merchants of one escrow compare notes through the node network
   (DESIGN "Ticket watch between merchants");
3. **listens** for conflicts (``waitforconflicts``, a long poll): two valid tickets of
   one ``(escrow_id, seqno)`` for different merchant indexes — learned from another
   merchant's announcement or from a colliding REDEEM in the mempool or a block — or one
   with ``seqno ≥ N``; it checks them itself (SPEC §8, signatures included) and keeps
   them as evidence (``TicketStore.add_evidence``, kind ``duplicate-pair``);
4. **proves**: for every provable evidence in the store — a signed out-of-range ticket
   kept by the service, a duplicate pair from the node, or a duplicate pair found in the
   merchant's own store (the customer gave two merchant indexes of this merchant one
   seqno) — it sends a CHEAT_PROOF signed by the merchant key, and on each new block
   follows it: confirmed (the escrow is broken by our proof) / moot (the escrow was
   broken by another proof or a duplicate REDEEM, or is refunded) / sent again if it
   vanished while the escrow is still live.

A CHEAT_PROOF has nonce 0 and is deterministic, so a resend is the same transaction.
Proof states live in memory (``status()``, served at ``GET /v1/cheats``); the evidence
itself is in the store, so a restarted merchant re-derives them.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from consensus.address import encode_address
from consensus.errors import DecodeError
from consensus.escrow import EscrowState
from consensus.keys import public_key
from consensus.ticket import TICKET_SIZE, Ticket, verify_ticket_signature
from consensus.tx import make_cheat_proof
from wallet.merchant.chainview import (METHOD_NOT_FOUND, RPC_INVALID_PARAMETER, ChainView,
                                       NodeError, NodeRejected, call_rpc)
from wallet.merchant.ticketstore import EVIDENCE_OUT_OF_RANGE, NewTicket, TicketStore
from wallet.rpcclient import RpcClient

log = logging.getLogger(__name__)

EVIDENCE_DUPLICATE_PAIR = "duplicate-pair"  # two tickets, one seqno, two merchant indexes
PENDING, SENT, CONFIRMED, MOOT, FAILED = "pending", "sent", "confirmed", "moot", "failed"
FINAL = frozenset({CONFIRMED, MOOT, FAILED})
LEASE_SECONDS = 600  # watchescrow lease...
RENEW_SECONDS = 200.0  # ...renewed this often
# Tickets per announcetickets call: the node's MAX_ANNOUNCE_TICKETS (node/rpc_watch.py), one
# SPEC §13 request's worth; restated because the wallet does not import the node.
ANNOUNCE_BATCH = 10_000
OLD_ANNOUNCE_BATCH = 1000  # the limit of nodes before 2026-12: used if a node refuses more
MAX_QUEUED = 100_000  # accepted tickets waiting to be announced (oldest dropped beyond)
MAX_OWN_CHECKS = 64  # duplicate-ticket rejections of one request checked for a proof
CONFLICT_WAIT = 10.0  # seconds of one waitforconflicts long poll
STEP_SECONDS = 1.0  # the prover looks at the tip at least this often
RETRY_SECONDS = 1.0  # pause after a node error
# Rejections that no retry fixes (the proof itself is wrong).
PERMANENT_REASONS = frozenset({"bad-cheat-proof", "bad-encoding", "bad-signature"})


@dataclass
class Proof:
    """One CHEAT_PROOF this merchant holds material for, and where it stands."""

    escrow_id: bytes
    seqno: int
    kind: str  # "duplicate" or "out-of-range" (SPEC §8)
    tickets: tuple[bytes, ...]  # 107-byte tickets: two for a duplicate, one out-of-range
    note: str
    status: str = PENDING  # pending, sent, confirmed, moot, failed
    txid: bytes | None = None
    height: int | None = None  # block that confirmed our proof
    reason: str = ""  # why moot / failed, or the last transient rejection
    attempts: int = 0  # sends so far
    found_at: float = 0.0  # time.time() when the watch first held it

    def to_json(self) -> dict[str, Any]:
        return {"escrow_id": self.escrow_id.hex(), "seqno": self.seqno, "kind": self.kind,
                "status": self.status, "txid": None if self.txid is None else self.txid.hex(),
                "height": self.height, "reason": self.reason, "attempts": self.attempts,
                "note": self.note, "tickets": [t.hex() for t in self.tickets]}


def check_conflict(tickets: Sequence[bytes], escrow: EscrowState,
                   genesis_hash: bytes) -> tuple[Ticket, Ticket | None] | None:
    """The SPEC §8 proof ``(ticket_a, ticket_b or None)`` in ``tickets`` (one or two
    107-byte tickets of the escrow ``escrow``), or None if they prove nothing: a pair
    must share escrow and seqno with different merchant indexes, a single ticket must
    have ``seqno ≥ N``; every signature must verify against the escrow owner."""
    try:
        decoded = [Ticket.decode(t) for t in tickets]
    except DecodeError:
        return None
    if not decoded or len(decoded) > 2:
        return None
    if not all(verify_ticket_signature(t, escrow.owner, genesis_hash) for t in decoded):
        return None
    if len(decoded) == 1:
        return (decoded[0], None) if decoded[0].seqno >= escrow.N else None
    a, b = decoded
    if a.key != b.key or a.merchant_index == b.merchant_index:
        return None
    return a, b


class CheatWatch:
    """Automatic proofs of cheating for the merchant with ``merchant_seed`` (see module
    docstring); run with ``run()``.

    ``store`` is the merchant's ticket store (evidence is kept there), ``view`` its chain
    view (escrows, transactions); ``rpc`` reaches the node's ticket-watch RPCs (None:
    only the merchant's own evidence is proven). ``fee`` (units) is what each
    CHEAT_PROOF pays the miner from the merchant's balance.
    """

    def __init__(self, merchant_seed: bytes, store: TicketStore, view: ChainView,
                 rpc: RpcClient | None = None, *, fee: int = 0) -> None:
        if fee < 0:
            raise ValueError("fee must be >= 0")
        self._seed = merchant_seed
        self.merchant_pubkey = public_key(merchant_seed)
        self._store = store
        self._view = view
        self._rpc = rpc
        self._fee = fee
        self._limiter = trio.CapacityLimiter(3)  # long polls never starve the service
        self.proofs: dict[tuple[bytes, int, str], Proof] = {}
        # Accepted tickets to announce, as runs of one escrow: (escrow_id, [ticket, ...]).
        self._queue: collections.deque[tuple[bytes, list[bytes]]] = collections.deque()
        self._queued_tickets = 0  # tickets in _queue
        self._batch = ANNOUNCE_BATCH  # tickets per announcetickets call
        self._queued = trio.Event()
        self._evidence = trio.Event()
        self._new_escrow = trio.Event()
        self._watched: dict[bytes, float] = {}  # escrow_id -> time.monotonic() of last lease
        self._seen: set[bytes] = set()  # escrows of accepted tickets since the last listescrows
        self._announce_ok = True  # False once the node lacks the ticket-watch RPCs
        self.announced = 0  # tickets announced so far
        self.conflicts_seen = 0

    # --- hooks for the ticket service (trio thread) -------------------------------------

    def tickets_accepted(self, tickets: Sequence[NewTicket]) -> None:
        """Queue durably stored tickets for announcement (never blocks)."""
        if not self._announce_ok or self._rpc is None:
            return
        for eid, run in itertools.groupby(tickets, key=lambda new: new.escrow_id):
            if eid not in self._watched and eid not in self._seen:
                self._seen.add(eid)
                self._new_escrow.set()
            raws = [new.ticket for new in run]
            self._queue.append((eid, raws))
            self._queued_tickets += len(raws)
        while self._queued_tickets > MAX_QUEUED:  # oldest dropped
            eid, raws = self._queue.popleft()
            excess = self._queued_tickets - MAX_QUEUED
            if len(raws) > excess:
                self._queue.appendleft((eid, raws[excess:]))
            self._queued_tickets -= min(excess, len(raws))
        self._queued.set()

    def _next_batch(self) -> tuple[bytes, list[bytes]]:
        """Take up to ``self._batch`` queued tickets of the first queued escrow, first
        queued first (runs of other escrows keep their places)."""
        eid = self._queue[0][0]
        batch: list[bytes] = []
        rest: list[tuple[bytes, list[bytes]]] = []
        while self._queue and len(batch) < self._batch:
            run_eid, raws = self._queue.popleft()
            if run_eid != eid:
                rest.append((run_eid, raws))
                continue
            room = self._batch - len(batch)
            batch += raws[:room]
            if len(raws) > room:
                self._queue.appendleft((eid, raws[room:]))
                break
        self._queue.extendleft(reversed(rest))
        self._queued_tickets -= len(batch)
        return eid, batch

    def _requeue(self, eid: bytes, batch: list[bytes]) -> None:
        """Put a batch that could not be announced back at the front."""
        self._queue.appendleft((eid, batch))
        self._queued_tickets += len(batch)

    def evidence_added(self) -> None:
        """The service kept new evidence (an out-of-range ticket): prove it now."""
        self._evidence.set()

    async def own_duplicates(self, candidates: Sequence[tuple[bytes, EscrowState]]) -> None:
        """Tickets the service refused as ``duplicate-ticket``: if the stored ticket of that
        seqno names another merchant index (this merchant is in the escrow twice), the
        pair is a SPEC §8 proof; kept as evidence. ``candidates``: (107 bytes, escrow)."""
        genesis = self._view.genesis_hash
        for raw, escrow in list(candidates)[:MAX_OWN_CHECKS]:
            ticket = Ticket.decode(raw)
            stored = await trio.to_thread.run_sync(self._store.get, ticket.escrow_id,
                                                   ticket.seqno)
            if stored is None or stored.merchant_index == ticket.merchant_index:
                continue
            proof = await trio.to_thread.run_sync(check_conflict, (stored.ticket, raw),
                                                  escrow, genesis)
            if proof is not None:
                self._keep(ticket.escrow_id, ticket.seqno, (stored.ticket, raw),
                           "the same seqno for two of this merchant's indexes")

    def _keep(self, escrow_id: bytes, seqno: int, tickets: Sequence[bytes], note: str) -> None:
        if self._store.add_evidence(EVIDENCE_DUPLICATE_PAIR, escrow_id, seqno, list(tickets),
                                    note):
            log.warning("escrow %s: seqno %d was issued twice (%s); proving it",
                        escrow_id.hex(), seqno, note)
        self._evidence.set()

    # --- the task -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscriber, announcer, conflict listener and prover side by side, until
        cancelled; node errors are logged and retried."""
        if self._rpc is not None:  # the node may have restarted: tell it what we hold
            self.tickets_accepted(await trio.to_thread.run_sync(self._open_tickets))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._prover)
            if self._rpc is not None:
                nursery.start_soon(self._subscriber)
                nursery.start_soon(self._announcer)
                nursery.start_soon(self._listener)
            task_status.started()

    def _open_tickets(self) -> list[NewTicket]:
        """Held and winning tickets of the store (≤ MAX_QUEUED), as announcements."""
        found: list[NewTicket] = []
        for grp in self._store.open_groups():
            for x in self._store.open_tickets(grp.escrow_id, grp.group):
                found.append(NewTicket(x.escrow_id, x.seqno, x.merchant_index, x.round,
                                       x.group, grp.t_draw, grp.t_expire, x.ticket))
                if len(found) >= MAX_QUEUED:
                    return found
        return found

    async def _call(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        assert self._rpc is not None
        return await call_rpc(self._rpc, method, *params, timeout=timeout,
                              limiter=self._limiter)

    def _lacks(self, exc: NodeError, what: str) -> bool:
        """True (and announcements off) if the node has no ticket-watch RPCs."""
        if isinstance(exc, NodeRejected) and exc.code == METHOD_NOT_FOUND:
            if self._announce_ok:
                log.warning("the node has no ticket watch (%s): duplicates are only caught "
                            "from this merchant's own evidence", what)
            self._announce_ok = False
            self._queue.clear()
            self._queued_tickets = 0
            return True
        return False

    async def _subscriber(self) -> None:
        """Keep the node subscribed to the escrows naming us and those we hold tickets of."""
        merchant = encode_address(self.merchant_pubkey)
        done_height = None
        listed: set[bytes] = set()  # live escrows naming this merchant, at done_height
        checked = None  # height at which the node last listed our leases
        while self._announce_ok:
            try:
                t = await self._view.height()
                if t != done_height:
                    found = await self._call("listescrows", {"merchant": merchant})
                    listed = {bytes.fromhex(e["escrow_id"]) for e in found
                              if isinstance(e, dict) and not e.get("broken")}
                    self._seen -= listed
                    for eid in set(self._watched) - listed - self._seen:
                        del self._watched[eid]  # refunded or broken: let the lease lapse
                    done_height = t
                now = time.monotonic()
                due = sorted(eid for eid in listed | self._seen
                             if now - self._watched.get(eid, -RENEW_SECONDS) >= RENEW_SECONDS)
                for start in range(0, len(due), 256):
                    part = due[start:start + 256]
                    await self._call("watchescrow", [e.hex() for e in part], LEASE_SECONDS)
                    for eid in part:
                        self._watched[eid] = now
                    log.info("watching %d escrows for duplicate tickets", len(self._watched))
                if self._watched and not due and t != checked:
                    checked = t
                    info = await self._call("getwatchinfo")
                    local = set(info.get("local", [])) if isinstance(info, dict) else set()
                    if any(eid.hex() not in local for eid in self._watched):
                        await self._node_restarted()
            except NodeError as exc:
                if self._lacks(exc, "watchescrow"):
                    return
                log.info("cheat watch: subscription failed, retrying: %s", exc)
            except (ValueError, TypeError, KeyError) as exc:
                log.info("cheat watch: malformed listescrows reply: %s", exc)
            with trio.move_on_after(STEP_SECONDS):
                await self._new_escrow.wait()
            self._new_escrow = trio.Event()

    async def _announcer(self) -> None:
        """Announce queued tickets, per escrow, ≤ ``ANNOUNCE_BATCH`` per call (one
        request's worth; ``OLD_ANNOUNCE_BATCH`` once a node refused that many)."""
        while self._announce_ok:
            await self._queued.wait()
            self._queued = trio.Event()
            while self._queue:
                eid, batch = self._next_batch()
                try:
                    result = await self._call("announcetickets", eid.hex(),
                                              [t.hex() for t in batch])
                except NodeError as exc:
                    if self._lacks(exc, "announcetickets"):
                        return
                    self._requeue(eid, batch)
                    if (isinstance(exc, NodeRejected) and exc.code == RPC_INVALID_PARAMETER
                            and self._batch > OLD_ANNOUNCE_BATCH):
                        log.info("the node takes at most %d tickets per announcement",
                                 OLD_ANNOUNCE_BATCH)
                        self._batch = OLD_ANNOUNCE_BATCH
                        continue
                    log.info("cheat watch: announcing %d tickets failed, retrying: %s",
                             len(batch), exc)
                    await trio.sleep(RETRY_SECONDS)
                    continue
                self.announced += len(batch)
                if isinstance(result, dict):
                    await self._conflicts(result.get("conflicts") or [])

    async def _listener(self) -> None:
        """Long-poll ``waitforconflicts`` and keep what proves cheating."""
        after = 0
        wait = CONFLICT_WAIT
        if self._rpc is not None:
            wait = max(0.1, min(CONFLICT_WAIT, getattr(self._rpc, "timeout", 30) / 2))
        while self._announce_ok:
            try:
                result = await self._call("waitforconflicts", after, int(wait * 1000),
                                          timeout=wait + 10)
                found = result.get("conflicts") if isinstance(result, dict) else None
                if not isinstance(found, list):
                    raise ValueError("malformed waitforconflicts reply")
                upcoming = result.get("next")
                if isinstance(upcoming, int) and upcoming - 1 < after:
                    after = 0  # the node restarted: its conflict ids begin again
                for item in found:
                    if isinstance(item, dict) and isinstance(item.get("id"), int):
                        after = max(after, item["id"])
                await self._conflicts(found)
            except NodeError as exc:
                if self._lacks(exc, "waitforconflicts"):
                    return
                log.info("cheat watch: waitforconflicts failed, retrying: %s", exc)
                await trio.sleep(RETRY_SECONDS)
            except ValueError as exc:
                log.warning("cheat watch: %s", exc)
                await trio.sleep(RETRY_SECONDS)

    async def _node_restarted(self) -> None:
        """The node no longer lists our leases (it restarted and lost its ticket table):
        subscribe and announce what we hold once more."""
        log.info("cheat watch: the node restarted; announcing our tickets again")
        self._watched.clear()
        self._new_escrow.set()
        self.tickets_accepted(await trio.to_thread.run_sync(self._open_tickets))

    async def _conflicts(self, items: list) -> None:
        """Check conflicts the node reported; keep the valid ones of our escrows."""
        for item in items:
            try:
                eid = bytes.fromhex(item["escrow_id"])
                tickets = tuple(bytes.fromhex(t) for t in item["tickets"])
                seqno = int(item["seqno"])
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("cheat watch: malformed conflict from the node: %.200s", item)
                continue
            if eid not in self._watched and eid not in self._seen:
                continue  # another escrow on this node: its own merchants prove it
            self.conflicts_seen += 1
            try:
                escrow = await self._view.escrow(eid)
            except NodeError as exc:
                log.info("cheat watch: cannot check a conflict now: %s", exc)
                continue
            if escrow is None or escrow.broken or any(len(t) != TICKET_SIZE for t in tickets):
                continue
            if check_conflict(tickets, escrow, self._view.genesis_hash) is None:
                log.warning("escrow %s: the node reported a conflict at seqno %d that proves "
                            "nothing; ignored", eid.hex(), seqno)
                continue
            if len(tickets) == 1:
                if self._store.add_evidence(EVIDENCE_OUT_OF_RANGE, eid, seqno, list(tickets),
                                            f"seqno {seqno} >= N {escrow.N} (from the node)"):
                    log.warning("escrow %s: out-of-range ticket seqno %d reported by the node",
                                eid.hex(), seqno)
                self._evidence.set()
            else:
                self._keep(eid, seqno, tickets,
                           f"reported by the node ({item.get('source', '?')})")

    # --- proving ------------------------------------------------------------------------

    def _load_evidence(self) -> None:
        """New provable evidence of the store becomes a pending Proof."""
        for ev in self._store.evidence():
            if ev.kind == EVIDENCE_OUT_OF_RANGE and len(ev.tickets) == 1:
                kind = "out-of-range"
            elif ev.kind == EVIDENCE_DUPLICATE_PAIR and len(ev.tickets) == 2:
                kind = "duplicate"
            else:
                continue  # e.g. the redeemer's one-ticket note of a duplicate REDEEM
            key = (ev.escrow_id, ev.seqno, kind)
            if key not in self.proofs:
                self.proofs[key] = Proof(ev.escrow_id, ev.seqno, kind, tuple(ev.tickets),
                                         ev.note, found_at=time.time())

    async def _prover(self) -> None:
        done: int | None = None
        while True:
            try:
                t = await self._view.height()
                fresh = self._evidence.is_set()
                self._evidence = trio.Event()
                if fresh or done is None:
                    await trio.to_thread.run_sync(self._load_evidence)
                if fresh or t != done:
                    await self.step(t)
                    done = t
            except NodeError as exc:
                log.info("cheat watch: node unavailable, retrying: %s", exc)
                await trio.sleep(RETRY_SECONDS)
                continue
            with trio.move_on_after(STEP_SECONDS):
                await self._evidence.wait()

    async def step(self, t: int) -> None:
        """Send or follow every unfinished proof at best height ``t`` (one proof per
        escrow at a time: a second proof against a broken escrow is refused anyway)."""
        busy: set[bytes] = set()
        for proof in sorted(self.proofs.values(), key=lambda p: p.status != SENT):
            if proof.status in FINAL:
                continue
            escrow = await self._view.escrow(proof.escrow_id)
            if proof.status == SENT and proof.txid is not None:
                status = await self._view.transaction_status(proof.txid)
                if status is not None and status[0] == "confirmed":
                    proof.status, proof.height, proof.reason = CONFIRMED, status[1], ""
                    log.warning("escrow %s broken by our CHEAT_PROOF %s at height %d "
                                "(%s, seqno %d)", proof.escrow_id.hex(), proof.txid.hex(),
                                status[1], proof.kind, proof.seqno)
                    continue
                if status is not None and escrow is not None and not escrow.broken:
                    busy.add(proof.escrow_id)
                    continue  # in the mempool: wait for a block
            if escrow is None:
                self._finish(proof, MOOT, "escrow refunded or unknown")
            elif escrow.broken:
                self._finish(proof, MOOT, "escrow already broken (another proof or a "
                                          "duplicate REDEEM)")
            elif proof.escrow_id not in busy:
                busy.add(proof.escrow_id)
                await self._send(proof, escrow)

    def _finish(self, proof: Proof, status: str, reason: str) -> None:
        proof.status, proof.reason = status, reason
        log.info("escrow %s: cheat proof (%s, seqno %d) %s: %s", proof.escrow_id.hex(),
                 proof.kind, proof.seqno, status, reason)

    async def _send(self, proof: Proof, escrow: EscrowState) -> None:
        found = check_conflict(proof.tickets, escrow, self._view.genesis_hash)
        if found is None:
            self._finish(proof, FAILED, "the evidence does not prove cheating")
            return
        tx = make_cheat_proof(self._seed, self._view.genesis_hash, self._fee, *found)
        proof.txid, proof.attempts = tx.txid(), proof.attempts + 1
        try:
            await self._view.send_raw_transaction(tx.encode())
        except NodeRejected as exc:
            if "already" in exc.reason:
                proof.status = SENT
                return
            if exc.reason in PERMANENT_REASONS:
                self._finish(proof, FAILED, exc.reason)
                return
            if exc.reason == "unknown-escrow":
                self._finish(proof, MOOT, "escrow refunded or unknown")
                return
            proof.status, proof.reason = PENDING, exc.reason  # e.g. escrow-broken in the pool
            log.info("escrow %s: CHEAT_PROOF refused for now (%s); retrying next block",
                     proof.escrow_id.hex(), exc.reason)
            return
        proof.status, proof.reason = SENT, ""
        log.warning("escrow %s: CHEAT_PROOF %s sent (%s, seqno %d)", proof.escrow_id.hex(),
                    proof.txid.hex(), proof.kind, proof.seqno)

    # --- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``{proofs: [...], announced, conflicts_seen, watching, node_watch}`` for
        ``GET /v1/cheats`` and ``merchant status``."""
        return {"proofs": [p.to_json() for p in sorted(
                    self.proofs.values(), key=lambda p: (p.found_at, p.escrow_id, p.seqno))],
                "announced": self.announced, "conflicts_seen": self.conflicts_seen,
                "watching": len(self._watched), "node_watch": self._announce_ok}
