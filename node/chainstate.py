"""Chain state: the one block pipeline of the node (SPEC §10).

``ChainState.add_block(raw)`` decodes a block once, runs the header checks when it is
indexed, the context-free body checks before its bytes (the ones that arrived) are
stored, and connects blocks through ``consensus.transition.connect_block`` — the one §10
sequence of the code base. Facts checked earlier (signature triples, VDF segments, kept
in ``verified``) are not recomputed, so each check costs once. Fork choice takes the
best entry of the index's candidate set; switching chains disconnects blocks with their
undo data and connects the new ones, one store batch each.
"""

import logging
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from consensus.block import (Block, Header, HeaderContext, compute_median_time_past,
                             compute_next_target, make_genesis, verify_header)
from consensus.errors import ConsensusError
from consensus.params import ChainParams
from consensus.state import Overlay
from consensus.transition import (apply_genesis, connect_block, verify_block_body,
                                  verify_block_size)
from node.blockindex import FAILED, HAVE_DATA, HEADER_VALID, BlockIndex, IndexEntry
from node.store import ChainStore
from p2p.interface import BlockResult, BlockStatus

log = logging.getLogger("node.chain")

# Reasons that say "not now" rather than "invalid": never cached as failed, never banned.
NOT_YET_REASONS = {"time-too-new"}
PROGRESS_SECONDS = 2.0


@dataclass
class TipChange:
    """Blocks disconnected and connected by one activation, in the order applied, with
    the state keys each connected block wrote (for the mempool)."""

    disconnected: list[Block] = field(default_factory=list)
    connected: list[Block] = field(default_factory=list)
    written_keys: set[bytes] = field(default_factory=set)


class ChainState:
    """The node's block tree and connected tip over its store (SPEC §10).

    ``prepare(block)`` (optional) returns facts already verified for ``block`` (e.g. its
    signatures checked in worker processes); it is called once per block, after its
    header passed and before its body is checked. Not thread-safe: one caller at a time.
    """

    def __init__(self, params: ChainParams, store: ChainStore,
                 clock: Callable[[], float] = time.time,
                 prepare: Callable[[Block], Container] | None = None) -> None:
        self.params = params
        self.store = store
        self.clock = clock
        self.prepare = prepare
        self.on_connected: Callable[[float], None] | None = None  # metrics: seconds per block
        self.genesis = make_genesis(params)
        self.genesis_hash = self.genesis.hash()
        self.index = BlockIndex()
        self._received: dict[bytes, tuple[Block, Container]] = {}
        self._progress_at = 0.0  # when the last UpdateTip line was written (set by _load)
        self._progress_height = 0
        self._best_header: IndexEntry | None = None
        if store.get_tip() is None:
            self._init_genesis()
        self._load()

    # -- start-up ------------------------------------------------------------------------
    def _init_genesis(self) -> None:
        if any(True for _ in self.store.iter_index()):
            raise RuntimeError("store has blocks but no tip: refusing to guess")
        view = Overlay(self.store.state)
        apply_genesis(self.params, view, self.genesis)
        self.store.put_block(self.genesis_hash, self.genesis.encode(),
                             (self.genesis.header.encode(), HEADER_VALID | HAVE_DATA, 0))
        self.store.commit_connect(self.genesis_hash, 0, view.changes(), view.undo_record(),
                                  self.genesis.txids())
        self.store.flush()

    def _load(self) -> None:
        rows = []
        for block_hash, header_bytes, status, seq in self.store.iter_index():
            rows.append((Header.decode(header_bytes), block_hash, header_bytes, status, seq))
        rows.sort(key=lambda r: (r[0].height, r[4]))
        for header, block_hash, header_bytes, status, seq in rows:
            parent = self.index.get(header.prev_hash)
            if header.height > 0 and parent is None:
                log.warning("index entry %s has no parent; ignored", block_hash.hex())
                continue
            self.index.insert(block_hash, header, header_bytes, parent, status, seq)
        genesis = self.index.get(self.genesis_hash)
        if genesis is None:
            raise RuntimeError("the store belongs to another chain (genesis differs); "
                               "use another --datadir")
        tip = self.index.get(self.store.get_tip())
        self.index.main = [tip.get_ancestor(h) for h in range(tip.height + 1)]
        # The first UpdateTip line measures its rate from start-up.
        self._progress_at, self._progress_height = time.monotonic(), tip.height
        log.info("chain loaded: height %d tip %s (%d headers known)", tip.height,
                 tip.hash.hex()[:16], len(self.index.entries))

    # -- queries -------------------------------------------------------------------------
    @property
    def tip(self) -> IndexEntry:
        return self.index.tip

    @property
    def height(self) -> int:
        return self.index.tip.height

    @property
    def entries(self) -> dict[bytes, IndexEntry]:
        return self.index.entries

    def is_on_main(self, entry: IndexEntry) -> bool:
        """Whether ``entry`` is on the connected best chain."""
        return self.index.is_on_main(entry)

    @property
    def main_hashes(self) -> "MainHashes":
        """The main chain's block hashes by height, as a read-only sequence view (no copy)."""
        return MainHashes(self.index.main)

    def hash_at(self, height: int) -> bytes:
        """Main-chain block hash at ``height`` (``IndexError`` above the tip)."""
        return self.index.main[height].hash

    def get_block(self, block_hash: bytes) -> Block | None:
        """A stored block, decoded."""
        raw = self.store.get_block(block_hash)
        return None if raw is None else Block.decode(raw)

    def get_locator(self) -> list[bytes]:
        """Block locator of the main chain (SPEC §11)."""
        return self.index.get_locator()

    def get_headers_after(self, locator: list[bytes], stop_hash: bytes, limit: int) -> list[bytes]:
        """Canonical main-chain header encodings after the locator's fork point."""
        return self.index.get_headers_after(locator, stop_hash, limit)

    # -- headers -------------------------------------------------------------------------
    def header_context(self, parent: IndexEntry) -> HeaderContext:
        """Expected target, median time past and clock for a child of ``parent``."""
        height = parent.height + 1
        target = compute_next_target(self.params, height, parent.header.target,
                                     lambda h: parent.get_ancestor(h).header.timestamp)
        stamps, entry = [], parent
        while entry is not None and len(stamps) < min(11, height):
            stamps.append(entry.header.timestamp)
            entry = entry.parent
        return HeaderContext(parent.hash, parent.height, target,
                             compute_median_time_past(stamps), int(self.clock()))

    def add_header(self, header: Header, *, persist: bool = True
                   ) -> tuple[IndexEntry | None, BlockResult | None]:
        """Check a header against its parent and index it (SPEC §10 header checks).

        Returns ``(entry, None)`` for a new or known valid header, else
        ``(None, BlockResult)`` with ORPHAN, INVALID or NOT_YET. With ``persist=False``
        the caller stores the new entry's index row itself (batched).
        """
        block_hash = header.hash()
        known = self.index.get(block_hash)
        if known is not None:
            if known.status & FAILED:
                return None, BlockResult(BlockStatus.INVALID, block_hash, "known-invalid")
            return known, None
        parent = self.index.get(header.prev_hash)
        if parent is None:
            return None, BlockResult(BlockStatus.ORPHAN, block_hash, "prev-unknown")
        if parent.status & FAILED:
            return None, BlockResult(BlockStatus.INVALID, block_hash, "bad-prevblk")
        try:
            verify_header(self.params, header, self.header_context(parent))
        except ConsensusError as exc:
            status = BlockStatus.NOT_YET if exc.reason in NOT_YET_REASONS else BlockStatus.INVALID
            return None, BlockResult(status, block_hash, exc.reason)
        entry = self.index.insert(block_hash, header, header.encode(), parent, HEADER_VALID)
        self.note_header(entry)
        if persist:
            self._put_index(entry)
        return entry, None

    def _put_index(self, entry: IndexEntry) -> None:
        self.store.put_index(entry.hash, entry.header_bytes, entry.status, entry.seq)

    def missing_blocks(self, entry: IndexEntry, limit: int) -> list[bytes]:
        """Hashes of the first ``limit`` blocks without data on the path to ``entry``,
        oldest first (walks back only over blocks without a complete path)."""
        out = []
        while entry is not None and not entry.chain_has_data:
            if not entry.status & HAVE_DATA:
                out.append(entry.hash)
            entry = entry.parent
        return out[::-1][:limit]

    # -- blocks --------------------------------------------------------------------------
    def add_block(self, raw: bytes) -> tuple[BlockResult, TipChange]:
        """Check, store and (if best) connect a block given as the bytes it arrived as
        (SPEC §10). Returns the result and the tip change it caused."""
        change = TipChange()
        try:
            verify_block_size(self.params, len(raw))
            block = Block.decode(raw)
        except ConsensusError as exc:
            return BlockResult(BlockStatus.INVALID, b"", exc.reason), change
        entry, result = self.add_header(block.header, persist=False)
        if result is not None:
            return result, change
        if entry.status & HAVE_DATA:
            return BlockResult(BlockStatus.KNOWN, entry.hash), change
        verified = self.prepare(block) if self.prepare is not None else frozenset()
        try:
            verify_block_body(self.params, block, entry.hash, verified)
        except ConsensusError as exc:
            if exc.reason != "bad-txnmrklroot":  # a mutated body does not condemn the header
                self.mark_failed(entry, exc.reason)
            else:
                self._put_index(entry)
            return BlockResult(BlockStatus.INVALID, entry.hash, exc.reason), change
        self.index.mark_data(entry)
        self.store.put_block(entry.hash, raw, (entry.header_bytes, entry.status, entry.seq))
        self._received[entry.hash] = (block, verified)
        try:
            self.activate_best_chain(change)
        finally:
            self._received.clear()
        if entry.status & FAILED:
            return BlockResult(BlockStatus.INVALID, entry.hash, entry.fail_reason), change
        status = BlockStatus.CONNECTED if self.is_on_main(entry) else BlockStatus.SIDE
        return BlockResult(status, entry.hash), change

    def mark_failed(self, entry: IndexEntry, reason: str) -> None:
        """Mark ``entry`` and all its descendants invalid, persistently."""
        log.warning("block %s at height %d invalid: %s", entry.hash.hex()[:16], entry.height,
                    reason)
        changed = self.index.mark_failed(entry, reason)
        self.store.put_index_rows([(e.hash, e.header_bytes, e.status, e.seq) for e in changed])

    def activate_best_chain(self, change: TipChange | None = None) -> TipChange:
        """Reorganise to the best candidate; a block failing to connect is marked invalid
        and the next best is tried (SPEC §10 "Fork choice")."""
        change = change if change is not None else TipChange()
        for _ in range(len(self.index.entries) + 1):
            target = self.index.candidates.best(self.tip)
            if target is self.tip:
                return change
            fork = self.index.find_fork(target)
            while self.tip is not fork:
                change.disconnected.append(self._disconnect_tip())
            path = []
            e = target
            while e is not fork:
                path.append(e)
                e = e.parent
            for e in reversed(path):
                try:
                    change.connected.append(self._connect(e, change.written_keys))
                except ConsensusError as exc:
                    self.mark_failed(e, exc.reason)
                    break
        return change

    def _connect(self, entry: IndexEntry, written: set[bytes]) -> Block:
        started = time.perf_counter()
        received = self._received.get(entry.hash)
        if received is not None:
            block, verified = received
        else:
            block = self.get_block(entry.hash)
            verified = self.prepare(block) if self.prepare is not None else frozenset()
        view = Overlay(self.store.state)
        connect_block(self.params, view, block, self.header_context(entry.parent),
                      self.genesis_hash, verified)
        changes = view.changes()
        self.store.commit_connect(entry.hash, entry.height, changes, view.undo_record(changes),
                                  block.txids())
        written.update(view.writes)
        self.index.main.append(entry)
        if self.on_connected is not None:
            self.on_connected(time.perf_counter() - started)
        self._log_tip(entry, len(block.txs))
        return block

    def _disconnect_tip(self) -> Block:
        entry = self.tip
        if entry.parent is None:
            raise RuntimeError("cannot disconnect genesis")
        block = self.get_block(entry.hash)
        undo = self.store.get_undo(entry.hash)
        self.store.commit_disconnect(entry.hash, entry.height, entry.parent.hash, undo,
                                     block.txids())
        self.index.main.pop()
        log.info("disconnected block %d %s", entry.height, entry.hash.hex()[:16])
        return block

    def best_header_height(self) -> int:
        """Height of the most-work header known (what sync is heading for)."""
        best = self._best_header
        return max(self.height, best.height if best is not None else 0)

    def _log_tip(self, entry: IndexEntry, ntx: int) -> None:
        """bitcoind-style ``UpdateTip`` lines, at most one per PROGRESS_SECONDS."""
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_SECONDS:
            log.debug("connected block %d %s (%d txs)", entry.height, entry.hash.hex()[:16], ntx)
            return
        elapsed = now - self._progress_at if self._progress_at else 0.0
        rate = (entry.height - self._progress_height) / elapsed if elapsed else 0.0
        best = max(entry.height, self.best_header_height())
        log.info("UpdateTip: height %d/%d (%s) best %s txs %d (%.1f blocks/s%s)",
                 entry.height, best, format_progress(entry.height, best),
                 entry.hash.hex()[:16], ntx, rate, format_eta(best - entry.height, rate))
        self._progress_at, self._progress_height = now, entry.height

    def note_header(self, entry: IndexEntry) -> None:
        """Remember the most-work header seen (for progress lines)."""
        best = self._best_header
        if best is None or entry.chainwork > best.chainwork:
            self._best_header = entry


def format_progress(height: int, best: int) -> str:
    """Sync progress as a percentage of the best known header height, e.g. ``"42.5%"``."""
    return "100%" if height >= best else f"{100.0 * height / max(best, 1):.1f}%"


def format_eta(remaining: int, rate: float) -> str:
    """``", ETA 1m20s"`` for ``remaining`` blocks at ``rate`` blocks/s; empty when
    synced or when no rate is known yet."""
    if remaining <= 0 or rate <= 0:
        return ""
    seconds = int(remaining / rate + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    return f", {remaining} to go, ETA {text}"


class MainHashes(Sequence):
    """Read-only view of main-chain hashes by height over ``BlockIndex.main`` (entries)."""

    def __init__(self, entries: list[IndexEntry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [e.hash for e in self._entries[item]]
        return self._entries[item].hash
