"""The mempool: transactions valid on top of the tip, as if in block ``tip + 1`` (SPEC §2).

Accepted transactions are applied, in acceptance order, to one view over a snapshot of
the tip state; each remembers the state keys it touched (read or wrote). A TRANSFER or
ESCROW_CREATE whose nonce is ahead of the sender's next nonce (at most
``MAX_NONCE_AHEAD``) waits aside until the gap is filled.

Tip changes are incremental: on connect, the block's transactions leave, and only the
entries whose touched keys the block wrote (or that share keys with those, transitively),
plus REDEEMs whose window has passed, are re-applied; on disconnect the pool is rebuilt
with the disconnected transactions first. Signatures are checked once: valid
``(pubkey, msg, sig)`` triples go into ``verified``, which re-checks and the node's
block connects skip. Eviction uses a heap (O(log n)); templates are chosen in
O(n log n) without re-applying (see ``select``).
"""

import heapq
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from consensus.errors import ConsensusError
from consensus.escrow import compute_group_of_seqno, compute_t_expire
from consensus.hashing import ZERO_HASH
from consensus.params import ChainParams
from consensus.state import StateView, get_account, get_escrow, put_block_vdf
from consensus.transition import TxContext, apply_tx, verify_tx_signature
from consensus.tx import CHEAT_PROOF, NONCE_KINDS, REDEEM, Tx
from node import replacement
from p2p.messages import MAX_TX_BYTES

log = logging.getLogger("node.mempool")

MAX_NONCE_AHEAD = 64
# Failures that do not depend on the state: a peer relaying these is misbehaving (SPEC §11).
STATELESS_REASONS = {"bad-encoding", "bad-version", "bad-kind", "bad-coinbase", "bad-signature"}


class PolicyError(Exception):
    """A transaction refused by local policy, not by consensus (never a ban)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VerifiedCache:
    """A bounded set of facts known valid (signature triples); oldest leave first."""

    def __init__(self, max_items: int = 400_000) -> None:
        self.max_items = max_items
        self._items: dict = {}

    def __contains__(self, item) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item) -> None:
        """Remember ``item``; drops the oldest when full."""
        if item not in self._items:
            if len(self._items) >= self.max_items:
                del self._items[next(iter(self._items))]
            self._items[item] = None

    def update(self, items) -> None:
        """``add`` each of ``items``."""
        for item in items:
            self.add(item)


class _PoolView:
    """The pool's writes over a base view (a ``StateView``)."""

    def __init__(self, base: StateView) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        merged = dict(self.base.iter_prefix(prefix))
        for key, value in self.writes.items():
            if key.startswith(prefix):
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        for key in sorted(merged):
            yield key, merged[key]


class _Recorder(_PoolView):
    """A scratch view over the pool view that records every key read."""

    def __init__(self, base: StateView) -> None:
        super().__init__(base)
        self.reads: set[bytes] = set()

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        self.reads.add(key)
        return self.base.get(key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        raise TypeError("transactions read single keys only")


@dataclass(eq=False)
class MempoolEntry:
    """One accepted transaction and what it touched."""

    tx: Tx
    txid: bytes
    size: int   # encoded bytes
    seq: int    # acceptance order
    touched: frozenset[bytes] = frozenset()
    parents: list["MempoolEntry"] = field(default_factory=list)  # earlier entries it builds on
    expire: int | None = None  # REDEEM: the nearest t_expire of its tickets

    @property
    def feerate(self) -> float:
        return self.tx.fee / self.size


class Mempool:
    """Pending transactions over the tip state (see module docstring)."""

    def __init__(self, params: ChainParams, genesis_hash: bytes, max_txs: int = 20_000,
                 max_waiting: int = 2_000, verified: VerifiedCache | None = None) -> None:
        self.params = params
        self.genesis_hash = genesis_hash
        self.max_txs = max_txs
        self.max_waiting = max_waiting
        self.verified = verified if verified is not None else VerifiedCache()
        self.entries: dict[bytes, MempoolEntry] = {}   # in acceptance order
        self.waiting: dict[tuple[bytes, int], Tx] = {}
        # key -> entries that touched it, in acceptance order (dict used as ordered set)
        self._touchers: dict[bytes, dict[MempoolEntry, None]] = {}
        self._by_fee: list[tuple[float, int, int, MempoolEntry]] = []
        self._tiebreak = itertools.count()
        self._seq = 0
        self._height = 0
        self._ctx: TxContext | None = None  # _context() of self._height
        self._vdf_key = b""
        self.view: _PoolView | None = None

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
        """The context of the next block (``tip + 1``), built once per height."""
        ctx = self._ctx
        if ctx is None or ctx.height != self._height:
            ctx = self._ctx = TxContext(self.params, self.genesis_hash, self._height,
                                        ZERO_HASH, self.verified)
        return ctx

    # -- tip changes ---------------------------------------------------------------------
    def reset(self, base: StateView, tip_height: int, next_vdf: bytes,
              readd: list[Tx] = (), confirmed: set[bytes] = frozenset(),
              written: set[bytes] | None = None) -> None:
        """Move over a new tip: ``base`` its state, ``next_vdf`` the ``vdf`` of block
        ``tip + 1``. ``confirmed`` txids leave. With ``written`` (the keys the connected
        blocks wrote) and nothing to ``readd`` the update is incremental; otherwise the
        pool is rebuilt with ``readd`` (transactions of disconnected blocks) first.
        """
        old_height, old_vdf_key = self._height, self._vdf_key
        self._height = tip_height + 1
        self._vdf_key = b"v" + self._height.to_bytes(8, "big")
        if self.view is None or readd or written is None or self._height < old_height:
            self._rebuild(base, next_vdf, list(readd), confirmed)
        else:
            self.view.base = base
            removed = [self.entries[t] for t in confirmed if t in self.entries]
            keys = set(written) | {old_vdf_key, self._vdf_key}
            expired = [e for e in self.entries.values()
                       if e.expire is not None and e.expire < self._height]
            self.view.writes.pop(old_vdf_key, None)
            put_block_vdf(self.view, self._height, next_vdf)
            self._recheck(removed, keys, expired)
        self._promote_waiting()

    def _rebuild(self, base: StateView, next_vdf: bytes, readd: list[Tx],
                 confirmed: set[bytes]) -> None:
        old = [e.tx for e in self.entries.values()]
        self.entries, self._touchers, self._by_fee = {}, {}, []
        self.view = _PoolView(base)
        put_block_vdf(self.view, self._height, next_vdf)
        dropped = 0
        for tx in readd + old:
            txid = tx.txid()
            if txid in confirmed or txid in self.entries:
                continue
            try:
                self._apply(tx, txid, self._seq)
                self._seq += 1
            except ConsensusError as exc:
                dropped += 1
                log.debug("mempool drops %s: %s", txid.hex()[:16], exc.reason)
        if dropped:
            log.info("mempool: %d transactions no longer valid were evicted", dropped)

    def _recheck(self, removed: list[MempoolEntry], keys: set[bytes],
                 dirty: list[MempoolEntry]) -> None:
        """Drop ``removed``; re-apply, in acceptance order, every entry touching a key in
        ``keys`` or touched by a removed/re-applied entry (transitively), and ``dirty``."""
        gone = {e.txid for e in removed}
        work = set(dirty)
        affected, frontier = set(), set(keys)
        for e in removed:
            frontier |= e.touched
        for e in dirty:
            frontier |= e.touched
        while frontier:
            key = frontier.pop()
            if key in affected:
                continue
            affected.add(key)
            for e in self._touchers.get(key, ()):
                if e not in work and e.txid not in gone:
                    work.add(e)
                    frontier |= e.touched - affected
        for e in list(work) + removed:
            self._forget(e)
        for key in affected:
            if key != self._vdf_key:
                self.view.writes.pop(key, None)
        dropped = 0
        for e in sorted(work, key=lambda x: x.seq):
            try:
                self._apply(e.tx, e.txid, e.seq)
            except ConsensusError as exc:
                dropped += 1
                log.debug("mempool drops %s: %s", e.txid.hex()[:16], exc.reason)
        if dropped:
            log.info("mempool: %d transactions no longer valid were evicted", dropped)

    def _forget(self, entry: MempoolEntry) -> None:
        self.entries.pop(entry.txid, None)
        for key in entry.touched:
            users = self._touchers.get(key)
            if users is not None:
                users.pop(entry, None)
                if not users:
                    del self._touchers[key]

    # -- acceptance ----------------------------------------------------------------------
    def add(self, tx: Tx) -> bytes:
        """Check ``tx`` against tip + pool and accept it; returns its txid.

        A REDEEM / CHANNEL_CLOSE / CHANNEL_CHEAT that conflicts with pooled claims of
        its sender replaces them if it pays enough more (``node.replacement``).
        Raises ``ConsensusError`` (consensus reject reason) or ``PolicyError``
        (``tx-size``, ``txn-already-in-mempool``, ``mempool-full``,
        ``nonce-too-far-ahead``, ``insufficient-fee``, ``too-many-replacements``).
        """
        if len(tx.encode()) > MAX_TX_BYTES:
            raise PolicyError("tx-size")
        txid = tx.txid()
        if txid in self.entries or self.waiting.get((tx.sender, tx.nonce)) == tx:
            raise PolicyError("txn-already-in-mempool")
        if tx.kind in NONCE_KINDS:
            expected = get_account(self.view, tx.sender).nonce
            if tx.nonce > expected:
                return self._wait(tx, txid, expected)
        if len(self.entries) >= self.max_txs:
            self._make_room(tx)
        try:
            self._apply(tx, txid, self._seq)
        except ConsensusError as exc:
            conflicts = replacement.find_conflicts(tx, exc.reason, self._touchers)
            if not conflicts:
                raise
            self._replace(tx, txid, conflicts)
        self._seq += 1
        self._promote_sender(tx.sender)
        return txid

    def _replace(self, tx: Tx, txid: bytes, conflicts: list[MempoolEntry]) -> None:
        """Replace the pooled claims ``conflicts`` by ``tx`` (``node.replacement``):
        raises ``PolicyError`` if the fee rule fails, or the ``ConsensusError`` of ``tx``
        with the conflicts put back if ``tx`` is invalid even without them."""
        replacement.check_replacement(tx, len(tx.encode()), conflicts)
        self._recheck(conflicts, set(), [])
        try:
            self._apply(tx, txid, self._seq)
        except ConsensusError:
            for old in sorted(conflicts, key=lambda e: e.seq):
                self._seq += 1
                try:
                    self._apply(old.tx, old.txid, self._seq)
                except ConsensusError as exc:
                    log.debug("replaced tx not restored %s: %s", old.txid.hex()[:16], exc.reason)
            self._seq += 1
            raise
        log.debug("mempool: %s replaced %d claims", txid.hex()[:16], len(conflicts))

    def _apply(self, tx: Tx, txid: bytes, seq: int) -> None:
        """Apply ``tx`` on top of the pool and index it (raises ``ConsensusError``)."""
        scratch = _Recorder(self.view)
        apply_tx(self._context(), scratch, tx)
        self._remember_signatures(scratch, tx)
        touched = frozenset(scratch.reads | scratch.writes.keys())
        parents: dict[MempoolEntry, None] = {}
        for key in touched:
            users = self._touchers.get(key)
            if users:  # the latest earlier toucher (entries are added in seq order)
                parents[next(reversed(users))] = None
        self.view.writes.update(scratch.writes)
        entry = MempoolEntry(tx, txid, len(tx.encode()), seq, touched, list(parents),
                             self._nearest_expire(tx))
        self.entries[txid] = entry
        for key in touched:
            self._touchers.setdefault(key, {})[entry] = None
        if len(self._by_fee) > 2 * len(self.entries) + 64:  # drop stale heap items
            self._by_fee = [item for item in self._by_fee
                            if self.entries.get(item[3].txid) is item[3]]
            heapq.heapify(self._by_fee)
        heapq.heappush(self._by_fee, (entry.feerate, -seq, next(self._tiebreak), entry))

    def _remember_signatures(self, view: StateView, tx: Tx) -> None:
        self.verified.add((tx.sender, tx.signing_message(self.genesis_hash), tx.sig))
        if tx.kind in (REDEEM, CHEAT_PROOF):
            for ticket in tx.tickets():
                escrow = get_escrow(view, ticket.escrow_id)
                if escrow is not None:
                    self.verified.add((escrow.owner, ticket.signing_message(self.genesis_hash),
                                       ticket.sig))

    def _nearest_expire(self, tx: Tx) -> int | None:
        if tx.kind != REDEEM:
            return None
        nearest = None
        for ticket in tx.tickets():
            escrow = get_escrow(self.view, ticket.escrow_id)
            if escrow is not None:
                t = compute_t_expire(self.params, escrow,
                                     compute_group_of_seqno(escrow, ticket.seqno))
                nearest = t if nearest is None else min(nearest, t)
        return nearest

    def _wait(self, tx: Tx, txid: bytes, expected: int) -> bytes:
        if tx.nonce > expected + MAX_NONCE_AHEAD:
            raise PolicyError("nonce-too-far-ahead")
        verify_tx_signature(self._context(), tx)
        self.verified.add((tx.sender, tx.signing_message(self.genesis_hash), tx.sig))
        if len(self.waiting) >= self.max_waiting:
            raise PolicyError("mempool-full")
        self.waiting[(tx.sender, tx.nonce)] = tx
        return txid

    def _promote_sender(self, sender: bytes) -> None:
        while self.waiting:
            tx = self.waiting.pop((sender, get_account(self.view, sender).nonce), None)
            if tx is None:
                return
            try:
                self._apply(tx, tx.txid(), self._seq)
                self._seq += 1
            except ConsensusError as exc:
                log.debug("waiting tx dropped: %s", exc.reason)
                return

    def _promote_waiting(self) -> None:
        senders = set()
        for (sender, nonce) in list(self.waiting):
            expected = get_account(self.view, sender).nonce
            if nonce < expected:
                del self.waiting[(sender, nonce)]
            elif nonce == expected:
                senders.add(sender)
        for sender in senders:
            self._promote_sender(sender)

    def _make_room(self, tx: Tx) -> None:
        """Evict the lowest-feerate entry (and what builds on it) if ``tx`` pays more per
        byte, else refuse (``mempool-full``)."""
        while self._by_fee and self.entries.get(self._by_fee[0][3].txid) is not self._by_fee[0][3]:
            heapq.heappop(self._by_fee)
        lowest = self._by_fee[0][3]
        if tx.fee / len(tx.encode()) <= lowest.feerate:
            raise PolicyError("mempool-full")
        heapq.heappop(self._by_fee)
        self._recheck([lowest], set(), [])

    # -- block templates -----------------------------------------------------------------
    def select(self, max_bytes: int) -> list[Tx]:
        """Transactions for the next block within ``max_bytes`` encoded bytes.

        A topological order by priority (Kahn's algorithm over a heap): an entry is
        ready once every earlier entry it builds on (``parents``: the last earlier
        toucher of each of its keys) is chosen; the ready entry with the best priority
        is taken next — REDEEMs first, nearest ``t_expire`` first, then the rest by fee
        per byte — and skipped (with its descendants) if it does not fit. Chosen entries
        are emitted in acceptance order, so each sees the state it saw in the pool and
        stays valid without being re-applied. O(n log n).
        """
        def priority(e: MempoolEntry):
            if e.expire is not None:
                return (0, e.expire, e.seq)
            return (1, -e.feerate, e.seq)

        waiting_on: dict[MempoolEntry, int] = {}
        children: dict[MempoolEntry, list[MempoolEntry]] = {}
        ready = []
        for e in self.entries.values():
            waiting_on[e] = len(e.parents)
            for p in e.parents:
                children.setdefault(p, []).append(e)
            if not e.parents:
                ready.append((priority(e), e.seq, e))
        heapq.heapify(ready)
        chosen, used = [], 0
        while ready:
            _, _, e = heapq.heappop(ready)
            if used + e.size > max_bytes:
                continue
            chosen.append(e)
            used += e.size
            for child in children.get(e, ()):
                waiting_on[child] -= 1
                if waiting_on[child] == 0:
                    heapq.heappush(ready, (priority(child), child.seq, child))
        return [e.tx for e in sorted(chosen, key=lambda e: e.seq)]
