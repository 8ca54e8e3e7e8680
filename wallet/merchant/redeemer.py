"""The merchant's auto-redeemer: claim winning tickets inside their window (SPEC §6, §7).

A trio task beside the ticket service. It waits for each new block with the node's
``waitfornewblock`` (``ChainView.wait_for_new_block``; a view or node without it is
polled every ``poll_interval`` s). On every new best height ``t`` it walks the draw
groups that still have open tickets (``TicketStore.open_groups``) and, per group:

1. once the draw is out (``t ≥ t_draw(g) + 1``, read with ``getdraw``), marks held tickets
   winning or losing;
2. follows each REDEEM in flight (``gettransaction``): confirmed ``confirm_depth`` deep (or
   the window closed) → redeemed; vanished (reorg, eviction, a send that never arrived) →
   its tickets go back to winning and are sent again; still unmined when the window
   closes → expired (unless ``getredeemed`` shows them paid);
3. while the next block may still include a redeem (``t + 1 ≤ t_expire(g)``), sends the
   winners not yet in flight in REDEEMs of at most 256 tickets; after that marks them
   expired.

Fees (``wallet.merchant.feeplan``): each REDEEM's fee comes from the node's
``estimatefee`` for a target of the blocks left, never below ``fee`` nor above its payout
minus one unit; tickets that missed a block (a REDEEM still unmined, evicted, or refused
as ``mempool-full``) are offered at least twice the last fee and the deadline floor. A
REDEEM still in the pool ``MISSED_AFTER`` blocks after its send (or when only one block
of the window is left) is *replaced* by one of the same tickets at the raised fee (the
node's replace-by-fee rule, ``node.replacement``).

A REDEEM is recorded in the store *before* it is sent, so a crash never loses track of
one. A rejected REDEEM is all-or-nothing (SPEC §7): ``ticket-already-redeemed`` is
resolved with ``getredeemed``; a per-ticket reason splits the batch in halves until the
culprit is alone, and that ticket is marked ``failed`` with the reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace

import trio

from consensus.keys import public_key
from consensus.ticket import Ticket
from consensus.tx import MAX_REDEEM_TICKETS, Tx, make_redeem
from wallet.merchant.chainview import ChainView, NodeError, NodeRejected
from wallet.merchant.feeplan import INCREMENTAL_FEERATE, fee_cap, plan_redeem_fee
from wallet.merchant.ticketstore import (EVIDENCE_DUPLICATE, EXPIRED, FAILED, HELD, LOSING,
                                         REDEEMED, WINNING, OpenGroup, PendingRedeem,
                                         StoredTicket, TicketStore)

log = logging.getLogger(__name__)

DEFAULT_FEE = 0  # least units per REDEEM, paid out of the payout (SPEC §2 rule 5)
MAX_FEE_TARGET = 1_008  # estimatefee's largest target
# Blocks after its send at which a REDEEM still in the pool counts as having missed one:
# the first block's template may have been built before the REDEEM arrived.
MISSED_AFTER = 2
POLL_INTERVAL = 0.5  # seconds between best-height polls when the view cannot wait
WAIT_SECONDS = 10.0  # longest single wait for a new block

# Reasons that may clear up by themselves: try again at the next height.
TRANSIENT_REASONS = frozenset({"ticket-not-drawn", "mempool-full", "insufficient-fee"})
# Reasons that condemn the whole transaction, not one ticket in it: no point splitting.
BATCH_REASONS = frozenset({"bad-encoding", "bad-version", "bad-kind", "bad-signature",
                           "bad-nonce", "fee-exceeds-payout", "unknown-escrow"})


class Redeemer:
    """Redeems the merchant's winning tickets (SPEC §6, §7); run with ``run()``.

    ``merchant_seed`` signs the REDEEMs (its public key must be the tickets' merchant);
    ``fee`` (units) is the least a REDEEM pays out of its payout (the plan of
    ``wallet.merchant.feeplan`` may raise it); ``poll_interval`` (seconds)
    paces the loop only when the view has no ``wait_for_new_block`` and after node errors;
    ``wait_seconds`` bounds one wait for a new block.
    ``wakeups`` counts the loop's passes and ``replacements`` the REDEEMs replaced by a
    higher fee (for tests and status).
    """

    def __init__(self, merchant_seed: bytes, store: TicketStore, view: ChainView, *,
                 fee: int = DEFAULT_FEE, poll_interval: float = POLL_INTERVAL,
                 wait_seconds: float = WAIT_SECONDS) -> None:
        if fee < 0:
            raise ValueError("fee must be >= 0")
        self._seed = merchant_seed
        self.merchant_pubkey = public_key(merchant_seed)
        self._store = store
        self._view = view
        self._fee = fee
        self._poll_interval = poll_interval
        self._wait_seconds = wait_seconds
        self._redeemed: dict[bytes, dict[int, set[int]]] = {}  # per step: getredeemed cache
        self._estimates: dict[int, int] = {}  # per step: estimatefee feerate by target
        # (escrow_id, group) -> (units/byte, best height) of the group's last REDEEM attempt
        self._attempts: dict[tuple[bytes, int], tuple[float, int]] = {}
        self.wakeups = 0
        self.replacements = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """``step`` on each new best height, woken by the node (``wait_for_new_block``)
        or, for a view without it, by polling every ``poll_interval`` s.

        A step cut short by an unreachable node is retried after ``poll_interval`` s.
        Runs until cancelled.
        """
        task_status.started()
        done_height: int | None = None
        wait = getattr(self._view, "wait_for_new_block", None)
        while True:
            self.wakeups += 1
            try:
                t = await self._view.height()
                if t != done_height:
                    await self.step(t)
                    done_height = t
                if wait is None:
                    await trio.sleep(self._poll_interval)
                else:
                    await wait(self._wait_seconds, after=t)
            except NodeError as exc:
                log.warning("redeemer: node unavailable, retrying: %s", exc)
                await trio.sleep(self._poll_interval)

    async def step(self, t: int) -> None:
        """One pass over every open group at best height ``t`` (see module docstring).

        Raises ``NodeError`` (other than a per-group rejection) when the node stops
        answering; what was done so far is already stored.
        """
        self._redeemed = {}
        self._estimates = {}
        for group in self._store.open_groups():
            await trio.lowlevel.checkpoint()
            try:
                await self._process_group(group, t)
            except NodeRejected as exc:
                log.warning("escrow %s group %d: node refused a read: %s",
                            group.escrow_id.hex(), group.group, exc.reason)

    async def _process_group(self, grp: OpenGroup, t: int) -> None:
        if t < grp.t_draw + 1:
            return  # the draw's VDF is not on chain yet
        eid, g = grp.escrow_id, grp.group
        held = [x for x in self._store.open_tickets(eid, g) if x.status == HELD]
        if held and not await self._classify(grp, held, t):
            return
        for pending in self._store.pending_redeems(eid, g):
            await self._track(pending, grp, t)
        unsent = [x for x in self._store.open_tickets(eid, g)
                  if x.status == WINNING and x.txid is None]
        if unsent and t + 1 <= grp.t_expire:
            for start in range(0, len(unsent), MAX_REDEEM_TICKETS):
                await self._send(unsent[start:start + MAX_REDEEM_TICKETS], grp, t)
        elif unsent:
            await self._close_window(unsent, grp)
        if not self._store.open_tickets(eid, g) and not self._store.pending_redeems(eid, g):
            self._store.drop_group(eid, g)

    async def _classify(self, grp: OpenGroup, held: list[StoredTicket], t: int) -> bool:
        """Mark held tickets winning/losing from the draw; False if the draw is unknown."""
        eid, g = grp.escrow_id, grp.group
        try:
            winners = await self._view.draw(eid, g)
        except NodeRejected as exc:
            if t < grp.t_expire:
                raise
            winners, reason = None, exc.reason
        else:
            reason = "draw-not-ready"
        if winners is None:
            if t < grp.t_expire:
                return False
            log.warning("escrow %s group %d: no draw before expiry (%s); %d tickets expired",
                        eid.hex(), g, reason, len(held))
            self._store.set_status([(eid, x.seqno, EXPIRED, reason) for x in held])
            return True
        drawn = set(winners)
        self._store.set_status(
            [(eid, x.seqno, WINNING if x.seqno in drawn else LOSING, "") for x in held])
        won = sum(1 for x in held if x.seqno in drawn)
        log.info("escrow %s group %d drawn: %d of %d held tickets win",
                 eid.hex(), g, won, len(held))
        return True

    async def _redeemed_by(self, escrow_id: bytes, *, refresh: bool = False) -> dict[int, set[int]]:
        """``getredeemed`` as ``{seqno: {merchant_index, ...}}``, cached for one step."""
        if refresh or escrow_id not in self._redeemed:
            records: dict[int, set[int]] = {}
            for seqno, merchant_index, _height in await self._view.redeemed(escrow_id):
                records.setdefault(seqno, set()).add(merchant_index)
            self._redeemed[escrow_id] = records
        return self._redeemed[escrow_id]

    async def _paid(self, escrow_id: bytes, tickets: Sequence[StoredTicket], *,
                    refresh: bool = False) -> set[int]:
        """Seqnos of ``tickets`` that the chain records as redeemed by this merchant.

        Also keeps evidence when another merchant_index redeemed one of our seqnos (a
        duplicate issue, SPEC §7 step 4, §8).
        """
        records = await self._redeemed_by(escrow_id, refresh=refresh)
        paid = set()
        for x in tickets:
            indexes = records.get(x.seqno, set())
            if x.merchant_index in indexes:
                paid.add(x.seqno)
            others = indexes - {x.merchant_index}
            if others and self._store.add_evidence(
                    EVIDENCE_DUPLICATE, escrow_id, x.seqno, [x.ticket],
                    f"seqno also redeemed by merchant_index {sorted(others)}"):
                log.warning("escrow %s: seqno %d was issued twice (also to %s)",
                            escrow_id.hex(), x.seqno, sorted(others))
        return paid

    def _tickets_of(self, pending: PendingRedeem) -> list[StoredTicket]:
        found = (self._store.get(pending.escrow_id, s) for s in pending.seqnos)
        return [x for x in found if x is not None]

    async def _track(self, pending: PendingRedeem, grp: OpenGroup, t: int) -> None:
        """Follow one REDEEM in flight (SPEC §7 window ``t_draw+1 … t_expire``)."""
        eid, txid = pending.escrow_id, pending.txid
        status = await self._view.transaction_status(txid)
        tickets = self._tickets_of(pending)
        if status is None:
            paid = await self._paid(eid, tickets)
            self._store.finish_redeem(txid, [(eid, s, REDEEMED, "") for s in paid])
            log.info("redeem %s vanished; %d of %d tickets paid, the rest will be resent",
                     txid.hex(), len(paid), len(tickets))
        elif status[0] == "confirmed":
            depth = t - status[1] + 1
            if depth >= self._view.params.confirm_depth or t >= grp.t_expire:
                await self._paid(eid, tickets)  # only for duplicate evidence
                self._store.finish_redeem(txid, [(eid, x.seqno, REDEEMED, "") for x in tickets])
                log.info("redeem %s confirmed at %d: %d tickets redeemed",
                         txid.hex(), status[1], len(tickets))
        elif t + 1 <= grp.t_expire and (t >= pending.sent_height + MISSED_AFTER
                                         or t + 1 == grp.t_expire):  # missed: raise
            await self._replace(pending, tickets, grp, t)
        elif t >= grp.t_expire:  # still in the mempool, and no next block may include it
            paid = await self._paid(eid, tickets)
            self._store.finish_redeem(txid, [
                (eid, x.seqno, REDEEMED, "") if x.seqno in paid
                else (eid, x.seqno, EXPIRED, "redeem not mined before t_expire")
                for x in tickets])
            log.warning("redeem %s not mined by t_expire %d", txid.hex(), grp.t_expire)

    async def _close_window(self, unsent: list[StoredTicket], grp: OpenGroup) -> None:
        """The redeem window closed: winners the chain did not pay become expired."""
        eid = grp.escrow_id
        paid = await self._paid(eid, unsent)
        self._store.set_status([
            (eid, x.seqno, REDEEMED, "") if x.seqno in paid
            else (eid, x.seqno, EXPIRED, "redeem window closed") for x in unsent])
        if len(unsent) > len(paid):
            log.warning("escrow %s group %d: %d winning tickets expired unredeemed",
                        eid.hex(), grp.group, len(unsent) - len(paid))

    async def _send(self, batch: list[StoredTicket], grp: OpenGroup, t: int) -> None:
        """Build, record, then send one REDEEM of ``batch`` (≤ 256 tickets, SPEC §2, §7)."""
        if not batch:
            return
        eid = grp.escrow_id
        tickets = [Ticket.decode(x.ticket) for x in batch]
        tx = await self._build(tickets, grp, t, self._missed_fee(grp, t, tickets))
        txid = tx.txid()
        pending = PendingRedeem(txid, eid, grp.group, tuple(x.seqno for x in batch), t, tx.fee)
        self._store.attach_redeem(pending)
        try:
            await self._view.send_raw_transaction(tx.encode())
        except NodeRejected as exc:
            if await self._view.transaction_status(txid) is not None:
                return  # the node already has this very transaction
            self._store.finish_redeem(txid)
            await self._rejected(batch, exc.reason, grp, t)
            return
        await self._note_arrival(pending)
        log.info("redeem %s sent: %d tickets of escrow %s group %d, fee %d",
                 txid.hex(), len(batch), eid.hex(), grp.group, tx.fee)

    async def _note_arrival(self, pending: PendingRedeem) -> None:
        """Move ``pending.sent_height`` to the best height once the node took it, if a
        block came meanwhile: blocks before its arrival are no miss (``MISSED_AFTER``)."""
        now = await self._view.height(fresh=True)
        if now > pending.sent_height:
            self._store.attach_redeem(replace(pending, sent_height=now))

    # -- fees ---------------------------------------------------------------------------
    async def _feerate(self, blocks_left: int) -> int:
        """``estimatefee`` feerate (units/byte) for ``blocks_left``, cached for one step;
        0 from a view or node without it."""
        target = max(1, min(blocks_left, MAX_FEE_TARGET))
        if target not in self._estimates:
            estimate = getattr(self._view, "estimate_feerate", None)
            rate = 0
            if estimate is not None:
                try:
                    rate = await estimate(target)
                except NodeRejected as exc:  # an older node: no estimatefee
                    log.debug("estimatefee refused (%s); fee floor only", exc.reason)
            self._estimates[target] = rate
        return self._estimates[target]

    async def _payout(self, tickets: Sequence[Ticket], escrow_id: bytes) -> int:
        """What ``tickets`` pay before the fee: ``β`` each, at most the escrow balance."""
        escrow = await self._view.escrow(escrow_id)
        if escrow is None:
            return 0
        return min(len(tickets) * escrow.beta, escrow.escrow_balance)

    def _missed_fee(self, grp: OpenGroup, t: int, tickets: Sequence[Ticket]) -> int | None:
        """The group's last attempt's fee, scaled to ``tickets``' size, if it was made at an
        earlier height (so it missed a block); else None."""
        last = self._attempts.get((grp.escrow_id, grp.group))
        if last is None or last[1] >= t:
            return None
        size = len(make_redeem(self._seed, self._view.genesis_hash, 0, list(tickets)).encode())
        return math.ceil(last[0] * size)

    async def _build(self, tickets: list[Ticket], grp: OpenGroup, t: int,
                     previous_fee: int | None) -> Tx:
        """A signed REDEEM of ``tickets`` at the planned fee (``feeplan.plan_redeem_fee``);
        remembers the attempt for the group."""
        genesis = self._view.genesis_hash
        blocks_left = grp.t_expire - t
        payout = await self._payout(tickets, grp.escrow_id)
        widest = make_redeem(self._seed, genesis, fee_cap(payout), tickets)  # largest size
        size = len(widest.encode())
        fee = plan_redeem_fee(feerate=await self._feerate(blocks_left), size=size,
                              payout=payout, blocks_left=blocks_left,
                              previous_fee=previous_fee, floor_fee=self._fee)
        self._attempts[(grp.escrow_id, grp.group)] = (fee / size, t)
        return widest if fee == widest.fee else make_redeem(self._seed, genesis, fee, tickets)

    async def _replace(self, pending: PendingRedeem, tickets: list[StoredTicket],
                       grp: OpenGroup, t: int) -> None:
        """Replace the pooled REDEEM ``pending`` (it missed a block) by one of the same
        tickets at a raised fee; keeps ``pending`` if the fee cannot rise enough or the
        node refuses the replacement."""
        mine = [x for x in tickets if x.status == WINNING and x.txid == pending.txid]
        if len(mine) != len(pending.seqnos):
            return  # some were settled meanwhile: let the REDEEM run its course
        decoded = [Ticket.decode(x.ticket) for x in mine]
        tx = await self._build(decoded, grp, t, pending.fee)
        if tx.fee < pending.fee + INCREMENTAL_FEERATE * len(tx.encode()):
            return  # at the cap: nothing more to offer
        new = PendingRedeem(tx.txid(), pending.escrow_id, pending.group, pending.seqnos, t,
                            tx.fee)
        self._store.attach_redeem(new)  # both in the store until the node answers
        try:
            await self._view.send_raw_transaction(tx.encode())
        except NodeRejected as exc:
            if await self._view.transaction_status(new.txid) is None:
                self._store.finish_redeem(new.txid)
                self._store.attach_redeem(pending)  # the tickets follow the old one again
                log.info("redeem %s: replacement at fee %d refused (%s)",
                         pending.txid.hex(), tx.fee, exc.reason)
                return
        self._store.finish_redeem(pending.txid)
        await self._note_arrival(new)
        self.replacements += 1
        log.info("redeem %s replaced by %s: fee %d -> %d, %d blocks left",
                 pending.txid.hex(), new.txid.hex(), pending.fee, tx.fee, grp.t_expire - t)

    async def _rejected(self, batch: list[StoredTicket], reason: str, grp: OpenGroup,
                        t: int) -> None:
        """Resolve a rejected REDEEM; splits it to find the ticket the reason is about."""
        eid = grp.escrow_id
        if reason == "ticket-already-redeemed":
            paid = await self._paid(eid, batch, refresh=True)
            if not paid and len(batch) == 1:
                paid = {batch[0].seqno}  # the node says so, even if getredeemed lags
            self._store.set_status([(eid, s, REDEEMED, "") for s in paid])
            rest = [x for x in batch if x.seqno not in paid]
            if rest and paid:
                await self._send(rest, grp, t)
            elif rest:
                await self._split(rest, grp, t)
            return
        if reason in TRANSIENT_REASONS:
            log.info("redeem of %d tickets refused (%s); retrying next block", len(batch), reason)
            return
        if reason == "ticket-expired":
            self._store.set_status([(eid, x.seqno, EXPIRED, reason) for x in batch])
            return
        if len(batch) > 1 and reason not in BATCH_REASONS:
            await self._split(batch, grp, t)
            return
        log.warning("escrow %s: redeem of %d tickets rejected for good: %s",
                    eid.hex(), len(batch), reason)
        self._store.set_status([(eid, x.seqno, FAILED, reason) for x in batch])

    async def _split(self, batch: list[StoredTicket], grp: OpenGroup, t: int) -> None:
        half = len(batch) // 2
        await self._send(batch[:half], grp, t)
        await self._send(batch[half:], grp, t)
