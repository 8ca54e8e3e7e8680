"""The mempool: transactions valid on top of the tip, as if in block ``tip + 1`` (SPEC §2).

Accepted transactions are applied, in acceptance order, to an ``Overlay`` over the tip
state, so each new one is checked against the tip plus everything before it. A TRANSFER
or ESCROW_CREATE whose nonce is ahead of the sender's next nonce (at most
``MAX_NONCE_AHEAD``) waits aside until the gap is filled. On every tip change the pool is
rebuilt: transactions of disconnected blocks are tried first, confirmed ones leave, and
whatever no longer applies (an expired REDEEM, a spent balance) is evicted.
"""

import logging
from dataclasses import dataclass

from consensus.errors import ConsensusError
from consensus.hashing import ZERO_HASH
from consensus.params import ChainParams
from consensus.state import Overlay, StateView, get_account, put_block_vdf
from consensus.transition import TxContext, apply_tx, verify_tx_signature
from consensus.tx import NONCE_KINDS, Tx

log = logging.getLogger("node.mempool")

MAX_NONCE_AHEAD = 64
# Failures that do not depend on the state: a peer relaying these is misbehaving (SPEC §11).
STATELESS_REASONS = {"bad-encoding", "bad-version", "bad-kind", "bad-coinbase", "bad-signature"}


class PolicyError(Exception):
    """A transaction refused by local policy, not by consensus (never a ban)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class MempoolEntry:
    """One accepted transaction."""

    tx: Tx
    txid: bytes
    size: int   # encoded bytes
    seq: int    # acceptance order

    @property
    def feerate(self) -> float:
        return self.tx.fee / self.size


class Mempool:
    """Pending transactions over the tip state (see module docstring)."""

    def __init__(self, params: ChainParams, genesis_hash: bytes, max_txs: int = 20_000,
                 max_waiting: int = 2_000) -> None:
        self.params = params
        self.genesis_hash = genesis_hash
        self.max_txs = max_txs
        self.max_waiting = max_waiting
        self.entries: dict[bytes, MempoolEntry] = {}
        self.waiting: dict[tuple[bytes, int], Tx] = {}
        self._seq = 0
        self._base: StateView | None = None
        self._height = 0
        self._vdf = ZERO_HASH
        self.view: Overlay | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def get(self, txid: bytes) -> Tx | None:
        """A pooled transaction by id."""
        entry = self.entries.get(txid)
        return entry.tx if entry else None

    def txids(self) -> list[bytes]:
        """Pooled transaction ids in acceptance order."""
        return [e.txid for e in sorted(self.entries.values(), key=lambda e: e.seq)]

    def _context(self) -> TxContext:
        return TxContext(self.params, self.genesis_hash, self._height, ZERO_HASH)

    def _fresh_view(self) -> Overlay:
        view = Overlay(self._base)
        put_block_vdf(view, self._height, self._vdf)
        return view

    # -- tip changes ---------------------------------------------------------------------
    def reset(self, base: StateView, tip_height: int, next_vdf: bytes,
              readd: list[Tx] = (), confirmed: set[bytes] = frozenset()) -> None:
        """Rebuild over a new tip: ``next_vdf`` is the ``vdf`` of block ``tip + 1``.

        ``readd`` (transactions of disconnected blocks) are tried first; ``confirmed``
        txids leave the pool.
        """
        self._base, self._height, self._vdf = base, tip_height + 1, next_vdf
        old = sorted(self.entries.values(), key=lambda e: e.seq)
        self.entries, self.view = {}, self._fresh_view()
        dropped = 0
        for tx in list(readd) + [e.tx for e in old]:
            txid = tx.txid()
            if txid in confirmed or txid in self.entries:
                continue
            try:
                self._apply(tx, txid)
            except (ConsensusError, PolicyError) as exc:
                dropped += 1
                log.debug("mempool drops %s: %s", txid.hex()[:16], getattr(exc, "reason", exc))
        self._promote_waiting()
        if dropped:
            log.info("mempool: %d transactions no longer valid were evicted", dropped)

    # -- acceptance ----------------------------------------------------------------------
    def add(self, tx: Tx) -> bytes:
        """Check ``tx`` against tip + pool and accept it; returns its txid.

        Raises ``ConsensusError`` (consensus reject reason) or ``PolicyError``
        (``txn-already-in-mempool``, ``mempool-full``, ``nonce-too-far-ahead``).
        """
        txid = tx.txid()
        if txid in self.entries or any(w == tx for w in self.waiting.values()):
            raise PolicyError("txn-already-in-mempool")
        if tx.kind in NONCE_KINDS:
            expected = get_account(self.view, tx.sender).nonce
            if tx.nonce > expected:
                return self._wait(tx, txid, expected)
        if len(self.entries) >= self.max_txs:
            self._make_room(tx)
        self._apply(tx, txid)
        self._promote_waiting()
        return txid

    def _apply(self, tx: Tx, txid: bytes) -> None:
        child = self.view.child()
        apply_tx(self._context(), child, tx)
        child.commit()
        self.entries[txid] = MempoolEntry(tx, txid, len(tx.encode()), self._seq)
        self._seq += 1

    def _wait(self, tx: Tx, txid: bytes, expected: int) -> bytes:
        if tx.nonce > expected + MAX_NONCE_AHEAD:
            raise PolicyError("nonce-too-far-ahead")
        verify_tx_signature(self._context(), tx)
        if len(self.waiting) >= self.max_waiting:
            raise PolicyError("mempool-full")
        self.waiting[(tx.sender, tx.nonce)] = tx
        return txid

    def _promote_waiting(self) -> None:
        progress = True
        while progress and self.waiting:
            progress = False
            for (sender, nonce), tx in list(self.waiting.items()):
                expected = get_account(self.view, sender).nonce
                if nonce < expected:
                    del self.waiting[(sender, nonce)]
                elif nonce == expected:
                    del self.waiting[(sender, nonce)]
                    try:
                        self._apply(tx, tx.txid())
                        progress = True
                    except ConsensusError as exc:
                        log.debug("waiting tx dropped: %s", exc.reason)

    def _make_room(self, tx: Tx) -> None:
        """Evict the lowest-feerate entry if ``tx`` pays more per byte, else refuse."""
        lowest = min(self.entries.values(), key=lambda e: (e.feerate, -e.seq))
        if tx.fee / len(tx.encode()) <= lowest.feerate:
            raise PolicyError("mempool-full")
        del self.entries[lowest.txid]
        self.reset(self._base, self._height - 1, self._vdf)

    # -- block templates -----------------------------------------------------------------
    def select(self, max_bytes: int) -> list[Tx]:
        """Transactions for the next block: highest fee per byte first, each sender's
        nonces in order, every choice re-checked on a scratch overlay; ``max_bytes`` caps
        the encoded size."""
        pending = sorted(self.entries.values(), key=lambda e: (-e.feerate, e.seq))
        view, chosen, used = self._fresh_view(), [], 0
        progress = True
        while progress and pending:
            progress = False
            for entry in list(pending):
                if used + entry.size > max_bytes:
                    pending.remove(entry)
                    continue
                tx = entry.tx
                if (tx.kind in NONCE_KINDS
                        and tx.nonce != get_account(view, tx.sender).nonce):
                    continue  # an earlier nonce of this sender is not in yet
                child = view.child()
                try:
                    apply_tx(self._context(), child, tx)
                except ConsensusError:
                    pending.remove(entry)
                    continue
                child.commit()
                chosen.append(tx)
                used += entry.size
                pending.remove(entry)
                progress = True
        return chosen
