"""The payee's channel closer: CHANNEL_CLOSE before ``expiry_height``, CHANNEL_CHEAT on a
proven equivocation (SPEC §16).

A trio task beside the voucher service. On every new best height ``t`` (current round
``t + 1``), for each live channel of the store:

1. open with an equivocation kept → CHANNEL_CHEAT (deposit + penalty − fee to the payee);
2. open and ``t + 1 >= expiry_height − 1 − close_margin`` (the last closable height minus
   the margin), or the best voucher pays the whole deposit → CHANNEL_CLOSE with the best
   voucher;
3. a transaction in flight: confirmed ``confirm_depth`` deep → ``closed`` / ``cheated``;
   vanished (eviction, reorg, a send that never arrived) → sent again while a block may
   still include it (height ``< expiry_height``), else ``expired``;
4. a CHANNEL_CLOSE still unconfirmed when an equivocation is learned (the payer signed
   an earlier ``k`` twice) → a CHANNEL_CHEAT that replaces it in the pool, paying the
   close's fee twice plus one unit per byte (the node's replace-by-fee rule,
   ``node.replacement``); if the node refuses, the close stays in flight.

The transaction is recorded (status and txid) *before* it is sent, under the service's
lock so no voucher is accepted after the close was built. CHANNEL_CLOSE and CHANNEL_CHEAT
carry nonce 0 and are deterministic, so a resend is the same transaction.

Several points of sale of one payee (``wallet.merchant.pos_gossip``): only point 0 sends
CHANNEL_CLOSE (with the best voucher it knows, its own or learned from the others'
receipts); the others stop accepting one round earlier (``ChannelService.accept_margin``)
and mark the channel ``settled`` once it has left the chain (also a point whose close or
cheat finds the channel gone, ``unknown-channel``). Any point holding an equivocation sends CHANNEL_CHEAT with
the two vouchers in a canonical order (lower cumulative first), so two points that both
caught the payer send the very same transaction (same fee, ``merchant serve --fee``).
"""

from __future__ import annotations

import logging

import trio

from consensus.tx import make_channel_cheat, make_channel_close
from wallet.merchant.chainview import ChainView, NodeError, NodeRejected
from wallet.merchant.channel_service import ChannelService
from wallet.merchant.channel_store import (CHEATED, CHEATING, CLOSED, CLOSING, EXPIRED, FAILED,
                                           OPEN, SETTLED, StoredChannel)

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between best-height polls
TRANSIENT_REASONS = frozenset({"mempool-full", "txn-already-in-mempool"})
INCREMENTAL_FEERATE = 1  # units/byte a replacement adds (node.replacement.INCREMENTAL_FEERATE)


class Closer:
    """Closes (or proves cheating on) the channels of ``service``'s store; run with ``run()``.

    ``payee_seed`` signs the transactions; ``fee`` (units) each pays out of its payout.
    """

    def __init__(self, payee_seed: bytes, service: ChannelService, view: ChainView, *,
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
        """Poll the best height; ``step`` on each new one, and at once when the service
        kept a new equivocation (retried after node errors). Runs the service's gossip
        with the peer points of sale beside it, if it has peers."""
        async with trio.open_nursery() as nursery:
            if self._service.gossip is not None:
                await nursery.start(self._service.gossip.run)
            task_status.started()
            done: tuple[int, int] | None = None
            while True:
                try:
                    t = await self._view.height()
                    now = (t, self._service.proofs)
                    if now != done:
                        await self.step(t)
                        done = now
                except NodeError as exc:
                    log.warning("closer: node unavailable, retrying: %s", exc)
                await trio.sleep(self._poll_interval)

    async def step(self, t: int) -> None:
        """One pass over the live channels at best height ``t`` (module docstring)."""
        for record in self._store.live_channels():
            await trio.lowlevel.checkpoint()
            if record.status == OPEN:
                async with self._service.lock:
                    await self._maybe_send(self._store.get(record.channel_id), t)
            else:
                await self._track(record, t)

    async def _maybe_send(self, record: StoredChannel, t: int) -> None:
        deadline = compute_close_deadline(record)
        due = (t + 1 >= deadline - self._service.close_margin
               or record.cumulative >= record.deposit)
        if self._store.proof(record.channel_id) is not None:
            await self._send(record, CHEATING, t)
        elif due and self._service.pos.closes:
            await self._send(record, CLOSING, t)
        elif t + 1 >= deadline - self._service.close_margin:  # a point that does not close
            if await self._view.channel(record.channel_id) is None:
                self._store.set_status(record.channel_id, SETTLED,
                                       reason="left the chain (point of sale 0 closes)")
                log.info("channel %s settled (closed by point of sale 0, cheated or "
                         "refunded)", record.channel_id.hex())

    def _build(self, record: StoredChannel, status: str):
        genesis = self._view.genesis_hash
        if status == CHEATING:
            voucher_a, voucher_b = sorted(self._store.proof(record.channel_id),
                                          key=lambda v: (v.cumulative, v.sig))
            return make_channel_cheat(self._seed, genesis, self._fee, record.channel_id,
                                      voucher_a, voucher_b)
        return make_channel_close(self._seed, genesis, self._fee, record.channel_id,
                                  record.voucher)

    async def _send(self, record: StoredChannel, status: str, t: int) -> None:
        """Record, then send, the CHANNEL_CLOSE / CHANNEL_CHEAT of ``record``."""
        cid = record.channel_id
        if t + 1 > record.expiry_height - 1:
            self._store.set_status(cid, EXPIRED, reason="no block left to include a close")
            log.warning("channel %s: expired before it could be closed", cid.hex())
            return
        if status == CLOSING and self._fee > record.cumulative:
            self._store.set_status(cid, FAILED, reason="fee-exceeds-payout")
            return
        tx = self._build(record, status)
        txid = tx.txid()
        await trio.to_thread.run_sync(lambda: self._store.set_status(
            cid, status, txid=txid, sent_height=t))
        try:
            await self._view.send_raw_transaction(tx.encode())
        except NodeRejected as exc:
            if exc.reason in TRANSIENT_REASONS or await self._view.transaction_status(txid):
                log.info("channel %s: %s not accepted now (%s); retrying next block",
                         cid.hex(), status, exc.reason)
                return
            if exc.reason == "unknown-channel":  # gone: another point's CHANNEL_CHEAT
                self._store.set_status(cid, SETTLED, reason="left the chain before this "
                                       f"point's {status} (another point's CHANNEL_CHEAT?)")
                log.warning("channel %s: left the chain before this point's %s", cid.hex(),
                            status)
                return
            self._store.set_status(cid, FAILED, reason=exc.reason)
            log.warning("channel %s: %s rejected for good: %s", cid.hex(), status, exc.reason)
            return
        what = "CHANNEL_CHEAT" if status == CHEATING else "CHANNEL_CLOSE"
        log.info("channel %s: %s %s sent (voucher %d, %d units)", cid.hex(), what, txid.hex(),
                 record.k, record.cumulative)

    async def _track(self, record: StoredChannel, t: int) -> None:
        """Follow the transaction in flight of a closing / cheating channel."""
        cid = record.channel_id
        found = await self._view.transaction_status(record.txid)
        proof = self._store.proof(cid)
        if (record.status == CLOSING and proof is not None
                and (found is None or found[0] == "mempool")
                and t + 1 <= compute_close_deadline(record)):
            async with self._service.lock:
                await self._replace_close(self._store.get(cid), proof, t)
            return
        if found is not None and found[0] == "confirmed":
            depth = t - found[1] + 1
            if depth >= self._view.params.confirm_depth or t >= record.expiry_height:
                done = CHEATED if record.status == CHEATING else CLOSED
                self._store.set_status(cid, done)
                log.info("channel %s %s at height %d", cid.hex(), done, found[1])
            return
        if found is None and t + 1 <= compute_close_deadline(record):
            async with self._service.lock:
                await self._send(self._store.get(cid), record.status, t)
        elif t >= record.expiry_height:
            self._store.set_status(cid, EXPIRED, reason="close not mined before expiry")
            log.warning("channel %s: close not mined before expiry_height %d", cid.hex(),
                        record.expiry_height)


    async def _replace_close(self, record: StoredChannel, proof, t: int) -> None:
        """Swap the unconfirmed CHANNEL_CLOSE of ``record`` for a CHANNEL_CHEAT of the
        equivocation ``proof`` at a replacing fee (at most deposit + penalty)."""
        cid, genesis = record.channel_id, self._view.genesis_hash
        voucher_a, voucher_b = proof
        size = len(make_channel_cheat(self._seed, genesis, 2**63, cid, voucher_a,
                                      voucher_b).encode())
        fee = min(2 * self._fee + INCREMENTAL_FEERATE * size, record.deposit + record.penalty)
        tx = make_channel_cheat(self._seed, genesis, fee, cid, voucher_a, voucher_b)
        old_txid, old_height = record.txid, record.sent_height
        await trio.to_thread.run_sync(lambda: self._store.set_status(
            cid, CHEATING, txid=tx.txid(), sent_height=t))
        try:
            await self._view.send_raw_transaction(tx.encode())
        except NodeRejected as exc:
            if await self._view.transaction_status(tx.txid()) is None:
                self._store.set_status(cid, CLOSING, txid=old_txid, sent_height=old_height)
                log.info("channel %s: CHANNEL_CHEAT to replace the close refused (%s); the "
                         "close stays in flight", cid.hex(), exc.reason)
                return
        log.warning("channel %s: equivocation after the close: CHANNEL_CHEAT %s (fee %d) "
                    "replaces CHANNEL_CLOSE %s", cid.hex(), tx.txid().hex(), fee,
                    old_txid.hex() if old_txid else "-")


def compute_close_deadline(record: StoredChannel) -> int:
    """The last height whose block may close ``record``'s channel: ``expiry_height - 1``
    (``consensus.channel.compute_channel_close_deadline`` for a stored channel)."""
    return record.expiry_height - 1

