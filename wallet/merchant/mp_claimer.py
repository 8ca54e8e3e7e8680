"""The payee's MICROPAY claimer: an MP_CLAIM for every winning ticket, retried until it is
confirmed or moot (SPEC §15).

A trio task beside the MICROPAY service. At once when the service stores a winner, and
on every new best height ``t`` (current round ``t + 1``), for each escrow of the store
with a claim to make (``MpStore.claims``):

1. ``won`` → build the MP_CLAIM (nonce 0, deterministic, so a resend is the same
   transaction), record status ``claiming`` and its txid (synced), then send it; a
   rejection ``unknown-mp-escrow`` means another payee's winner took the escrow (``moot``),
   ``mp-escrow-expired`` that no block may include it (``expired``); transient reasons are
   retried at the next block, the rest end as ``failed``;
2. ``claiming`` → follow the transaction: confirmed ``confirm_depth`` deep → ``claimed``;
   vanished (eviction, reorg, a send that never arrived) → sent again while a block may
   still include it (height ``< refund_height``) and the escrow still exists, else
   ``moot`` (the escrow is gone) or ``expired``.
"""

from __future__ import annotations

import logging

import trio

from consensus.tx import make_mp_claim
from wallet.merchant.chainview import ChainView, NodeError, NodeRejected
from wallet.merchant.mp_service import MpService
from wallet.merchant.mp_store import (CLAIMED, CLAIMING, EXPIRED, FAILED, MOOT, WON,
                                      StoredMpEscrow)

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between best-height polls
TRANSIENT_REASONS = frozenset({"mempool-full", "txn-already-in-mempool", "txn-already-known"})


class MpClaimer:
    """Claims the winners held in ``service``'s store; run with ``run()``.

    ``payee_seed`` signs the MP_CLAIMs; ``fee`` (units) each pays out of the escrow amount.
    """

    def __init__(self, payee_seed: bytes, service: MpService, view: ChainView, *,
                 fee: int = 0, poll_interval: float = POLL_INTERVAL) -> None:
        if fee < 0:
            raise ValueError("fee must be >= 0")
        self._seed = payee_seed
        self._service = service
        self._store = service.store
        self._view = view
        self._fee = fee
        self._poll_interval = poll_interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Step on each new best height and at once when a new winner is stored (retried
        after node errors)."""
        task_status.started()
        done: tuple[int, int] | None = None
        while True:
            wake = self._service.wake
            try:
                t = await self._view.height()
                now = (t, self._service.claims)
                if now != done:
                    await self.step(t)
                    done = now
            except NodeError as exc:
                log.warning("MICROPAY claimer: node unavailable, retrying: %s", exc)
            with trio.move_on_after(self._poll_interval):
                await wake.wait()

    async def step(self, t: int) -> None:
        """One pass over the escrows with a claim to make, at best height ``t``."""
        claims = await trio.to_thread.run_sync(self._store.claims)
        for record in claims:
            await trio.lowlevel.checkpoint()
            if record.status == WON:
                await self._send(record, t)
            else:
                await self._track(record, t)

    def _claim(self, record: StoredMpEscrow):
        stored = self._store.ticket(record.winner_c)
        return make_mp_claim(self._seed, self._view.genesis_hash, self._fee,
                             record.mp_escrow_id, stored.r1, stored.ticket.r2,
                             stored.ticket.ticket_sig)

    async def _send(self, record: StoredMpEscrow, t: int) -> None:
        """Record, then send, the MP_CLAIM of ``record``'s winner."""
        eid = record.mp_escrow_id
        if t + 1 > record.refund_height - 1:
            self._store.set_status(eid, EXPIRED, reason="no block left to include the claim")
            log.warning("MP escrow %s: winner expired before it could be claimed", eid.hex())
            return
        if self._fee > record.amount:
            self._store.set_status(eid, FAILED, reason="fee-exceeds-payout")
            return
        tx = self._claim(record)
        txid = tx.txid()
        await trio.to_thread.run_sync(lambda: self._store.set_status(
            eid, CLAIMING, txid=txid, sent_height=t))
        try:
            await self._view.send_raw_transaction(tx.encode())
        except NodeRejected as exc:
            if exc.reason in TRANSIENT_REASONS or await self._view.transaction_status(txid):
                log.info("MP escrow %s: claim not accepted now (%s); retrying", eid.hex(),
                         exc.reason)
                return
            final = {"unknown-mp-escrow": MOOT, "mp-escrow-expired": EXPIRED}.get(exc.reason,
                                                                                  FAILED)
            self._store.set_status(eid, final, reason=exc.reason)
            log.warning("MP escrow %s: claim rejected (%s): %s", eid.hex(), exc.reason, final)
            return
        log.info("MP escrow %s: MP_CLAIM %s sent for %d units", eid.hex(), txid.hex(),
                 record.amount)

    async def _track(self, record: StoredMpEscrow, t: int) -> None:
        """Follow the MP_CLAIM in flight of a ``claiming`` escrow."""
        eid = record.mp_escrow_id
        found = await self._view.transaction_status(record.txid)
        if found is not None and found[0] == "confirmed":
            if t - found[1] + 1 >= self._view.params.confirm_depth:
                self._store.set_status(eid, CLAIMED)
                log.info("MP escrow %s claimed at height %d", eid.hex(), found[1])
            return
        if found is not None:
            return  # in the mempool
        if await self._view.mp_escrow(eid) is None:
            # read again: a block connecting between the two reads moves the claim from the
            # mempool to the chain; found now, the next step follows it
            if await self._view.transaction_status(record.txid) is None:
                self._store.set_status(eid, MOOT,
                                       reason="escrow left the chain without this claim")
                log.warning("MP escrow %s: gone before our claim confirmed", eid.hex())
        elif t + 1 <= record.refund_height - 1:
            await self._send(record, t)
        else:
            self._store.set_status(eid, EXPIRED, reason="claim not mined before refund_height")
