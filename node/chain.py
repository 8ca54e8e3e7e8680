"""Block index, fork choice and reorgs over the LevelDB store (SPEC §10).

The index holds every header we accepted (headers-first sync adds headers before their
blocks). The best chain is the fully-downloaded, not-invalid chain with the most
cumulative work; ties keep the block seen first. Switching chains disconnects blocks
with their undo data and connects the new ones, one store batch each.
"""

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from consensus.block import (Block, Header, HeaderContext, compute_median_time_past,
                             compute_next_target, compute_work, make_genesis, verify_header)
from consensus.errors import ConsensusError
from consensus.params import ChainParams
from consensus.state import Overlay
from consensus.transition import apply_block, apply_genesis, verify_block_body
from node.store import ChainStore

log = logging.getLogger("node.chain")

HEADER_VALID, HAVE_DATA, FAILED = 1, 2, 4
MAX_LOCATOR = 64
# Reasons that say "not now" rather than "invalid": never cached as failed, never banned.
NOT_YET_REASONS = {"time-too-new"}


class AddStatus(enum.Enum):
    """Outcome of offering a block to the chain (STYLE: explicit results, not booleans)."""

    CONNECTED = "connected"   # the block is now on the best chain
    SIDE = "side"             # stored; not (yet) on the best chain
    ORPHAN = "orphan"         # parent header unknown
    KNOWN = "known"           # we already have it
    INVALID = "invalid"       # consensus failure (reason set)
    NOT_YET = "not-yet"       # acceptable later (e.g. timestamp too far in the future)


@dataclass(frozen=True)
class AddResult:
    """What ``add_block`` did."""

    status: AddStatus
    block_hash: bytes
    reason: str = ""


@dataclass(eq=False)
class IndexEntry:
    """One known header, its place in the tree and what we know of its block."""

    hash: bytes
    header: Header
    parent: "IndexEntry | None"
    chainwork: int        # cumulative work up to and including this block
    status: int           # HEADER_VALID | HAVE_DATA | FAILED bits
    seq: int              # arrival order, for "ties keep the block seen first"
    chain_has_data: bool = False
    fail_reason: str = ""
    children: list["IndexEntry"] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.header.height


@dataclass
class TipChange:
    """Blocks disconnected and connected by one activation, in the order applied."""

    disconnected: list[Block] = field(default_factory=list)
    connected: list[Block] = field(default_factory=list)


class Chain:
    """The node's view of the block tree and its connected tip (SPEC §10)."""

    def __init__(self, params: ChainParams, store: ChainStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.params = params
        self.store = store
        self.clock = clock
        self.genesis = make_genesis(params)
        self.genesis_hash = self.genesis.hash()
        self.entries: dict[bytes, IndexEntry] = {}
        self.main: list[bytes] = []  # main-chain hashes by height
        self._seq = 0
        if store.get_tip() is None:
            self._init_genesis()
        self._load()

    # -- start-up ------------------------------------------------------------------------
    def _init_genesis(self) -> None:
        if any(True for _ in self.store.iter_index()):
            raise RuntimeError("store has blocks but no tip: refusing to guess")
        view = Overlay(self.store.state)
        apply_genesis(self.params, view, self.genesis)
        self.store.put_block(self.genesis_hash, self.genesis.encode())
        self.store.put_index(self.genesis_hash, self.genesis.header.encode(),
                             HEADER_VALID | HAVE_DATA, 0)
        self.store.commit_connect(self.genesis_hash, 0, view.changes(), view.undo_record(),
                                  [self.genesis.txs[0].txid()])

    def _load(self) -> None:
        rows = sorted(self.store.iter_index(), key=lambda r: Header.decode(r[1]).height)
        for block_hash, header_bytes, status, seq in rows:
            header = Header.decode(header_bytes)
            parent = self.entries.get(header.prev_hash)
            if header.height > 0 and parent is None:
                log.warning("index entry %s has no parent; ignored", block_hash.hex())
                continue
            self._insert(block_hash, header, parent, status, seq)
        if self.genesis_hash not in self.entries:
            raise RuntimeError("the store belongs to another chain (genesis differs); "
                               "use another --datadir")
        tip = self.entries[self.store.get_tip()]
        self.main = [b""] * (tip.height + 1)
        entry = tip
        while entry is not None:
            self.main[entry.height] = entry.hash
            entry = entry.parent
        self.tip = tip
        log.info("chain loaded: height %d tip %s (%d headers known)", tip.height,
                 tip.hash.hex()[:16], len(self.entries))

    def _insert(self, block_hash: bytes, header: Header, parent: IndexEntry | None,
                status: int, seq: int) -> IndexEntry:
        work = compute_work(header.target) + (parent.chainwork if parent else 0)
        entry = IndexEntry(block_hash, header, parent, work, status, seq)
        if parent is not None:
            parent.children.append(entry)
            if parent.status & FAILED:
                entry.status |= FAILED
        entry.chain_has_data = bool(status & HAVE_DATA) and (parent is None or parent.chain_has_data)
        self.entries[block_hash] = entry
        self._seq = max(self._seq, seq + 1)
        return entry

    # -- queries -------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.tip.height

    def is_on_main(self, entry: IndexEntry) -> bool:
        """Whether ``entry`` is on the connected best chain."""
        return entry.height < len(self.main) and self.main[entry.height] == entry.hash

    def get_ancestor(self, entry: IndexEntry, height: int) -> IndexEntry:
        """The ancestor of ``entry`` at ``height`` (walks back; jumps on the main chain)."""
        while entry.height > height:
            if self.is_on_main(entry):
                return self.entries[self.main[height]]
            entry = entry.parent
        return entry

    def get_block(self, block_hash: bytes) -> Block | None:
        """A stored block, decoded."""
        raw = self.store.get_block(block_hash)
        return None if raw is None else Block.decode(raw)

    def get_locator(self) -> list[bytes]:
        """Main-chain hashes, newest first, spaced exponentially, ending at genesis."""
        out, height, step = [], self.tip.height, 1
        while height > 0 and len(out) < MAX_LOCATOR - 1:
            out.append(self.main[height])
            if len(out) >= 10:
                step *= 2
            height -= step
        out.append(self.genesis_hash)
        return out

    def get_headers_after(self, locator: list[bytes], stop_hash: bytes, limit: int) -> list[Header]:
        """Main-chain headers after the first locator hash we have on the main chain."""
        start = 0
        for h in locator:
            entry = self.entries.get(h)
            if entry is not None and self.is_on_main(entry):
                start = entry.height + 1
                break
        out = []
        for height in range(start, min(len(self.main), start + limit)):
            entry = self.entries[self.main[height]]
            out.append(entry.header)
            if entry.hash == stop_hash:
                break
        return out

    # -- headers -------------------------------------------------------------------------
    def header_context(self, parent: IndexEntry) -> HeaderContext:
        """Expected target, median time past and clock for a child of ``parent``."""
        height = parent.height + 1
        target = compute_next_target(self.params, height, parent.header.target,
                                     lambda h: self.get_ancestor(parent, h).header.timestamp)
        stamps, entry = [], parent
        while entry is not None and len(stamps) < min(11, height):
            stamps.append(entry.header.timestamp)
            entry = entry.parent
        return HeaderContext(parent.hash, parent.height, target,
                             compute_median_time_past(stamps), int(self.clock()))

    def add_header(self, header: Header) -> tuple[IndexEntry | None, AddResult | None]:
        """Check a header against its parent and index it (SPEC §10 header checks).

        Returns ``(entry, None)`` for a new or known valid header, else
        ``(None, AddResult)`` with ORPHAN, INVALID or NOT_YET.
        """
        block_hash = header.hash()
        known = self.entries.get(block_hash)
        if known is not None:
            if known.status & FAILED:
                return None, AddResult(AddStatus.INVALID, block_hash, "known-invalid")
            return known, None
        parent = self.entries.get(header.prev_hash)
        if parent is None:
            return None, AddResult(AddStatus.ORPHAN, block_hash, "prev-unknown")
        if parent.status & FAILED:
            return None, AddResult(AddStatus.INVALID, block_hash, "bad-prevblk")
        try:
            verify_header(self.params, header, self.header_context(parent))
        except ConsensusError as exc:
            status = AddStatus.NOT_YET if exc.reason in NOT_YET_REASONS else AddStatus.INVALID
            return None, AddResult(status, block_hash, exc.reason)
        entry = self._insert(block_hash, header, parent, HEADER_VALID, self._seq)
        self.store.put_index(block_hash, header.encode(), entry.status, entry.seq)
        return entry, None

    def missing_blocks(self, entry: IndexEntry) -> list[bytes]:
        """Hashes of blocks without data on the path genesis -> ``entry``, oldest first."""
        out = []
        while entry is not None and not entry.chain_has_data:
            if not entry.status & HAVE_DATA:
                out.append(entry.hash)
            entry = entry.parent
        return out[::-1]

    # -- blocks --------------------------------------------------------------------------
    def check_block(self, block: Block) -> tuple[IndexEntry | None, AddResult | None]:
        """Header checks for a received block; ``(entry, None)`` if its body still needs
        ``verify_block_body`` and storing, else ``(None, result)``."""
        entry, result = self.add_header(block.header)
        if result is not None:
            return None, result
        if entry.status & HAVE_DATA:
            return None, AddResult(AddStatus.KNOWN, entry.hash)
        return entry, None

    def verify_body(self, block: Block, block_hash: bytes) -> None:
        """Context-free body checks (size, VDF, tx_root); pure, may run in a thread."""
        verify_block_body(self.params, block, block_hash)

    def store_block(self, entry: IndexEntry, block_bytes: bytes) -> None:
        """Persist a block whose body passed ``verify_body``."""
        self.store.put_block(entry.hash, block_bytes)
        entry.status |= HAVE_DATA
        self.store.put_index(entry.hash, entry.header.encode(), entry.status, entry.seq)
        self._propagate_data(entry)

    def mark_failed(self, entry: IndexEntry, reason: str) -> None:
        """Mark ``entry`` and all its descendants invalid, persistently."""
        log.warning("block %s at height %d invalid: %s", entry.hash.hex()[:16], entry.height, reason)
        stack = [entry]
        entry.fail_reason = reason
        while stack:
            e = stack.pop()
            e.status |= FAILED
            e.fail_reason = e.fail_reason or "bad-prevblk"
            self.store.put_index(e.hash, e.header.encode(), e.status, e.seq)
            stack.extend(e.children)

    def _propagate_data(self, entry: IndexEntry) -> None:
        stack = [entry]
        while stack:
            e = stack.pop()
            if e.status & HAVE_DATA and (e.parent is None or e.parent.chain_has_data):
                e.chain_has_data = True
                stack.extend(e.children)

    def best_candidate(self) -> IndexEntry:
        """Most-work fully-downloaded valid entry; ties keep the earliest seen (the tip)."""
        best = self.tip
        for e in self.entries.values():
            if e.chain_has_data and not e.status & FAILED:
                if e.chainwork > best.chainwork or (e.chainwork == best.chainwork
                                                    and e.seq < best.seq and e is not best
                                                    and best is not self.tip):
                    best = e
        return best

    def activate_best_chain(self) -> TipChange:
        """Reorganise to the best candidate; a block failing to connect is marked invalid
        and the next best is tried (SPEC §10 "Fork choice")."""
        change = TipChange()
        for _ in range(len(self.entries) + 1):
            target = self.best_candidate()
            if target is self.tip:
                return change
            fork = self._find_fork(target)
            while self.tip is not fork:
                change.disconnected.append(self._disconnect_tip())
            path = []
            e = target
            while e is not fork:
                path.append(e)
                e = e.parent
            for e in reversed(path):
                try:
                    change.connected.append(self._connect(e))
                except ConsensusError as exc:
                    self.mark_failed(e, exc.reason)
                    break
        return change

    def _find_fork(self, entry: IndexEntry) -> IndexEntry:
        while not self.is_on_main(entry):
            entry = entry.parent
        return entry if entry.height <= self.tip.height else self.tip

    def _connect(self, entry: IndexEntry) -> Block:
        block = self.get_block(entry.hash)
        view = Overlay(self.store.state)
        apply_block(self.params, view, block, entry.hash, self.genesis_hash)
        self.store.commit_connect(entry.hash, entry.height, view.changes(), view.undo_record(),
                                  [tx.txid() for tx in block.txs])
        self.main.append(entry.hash)
        self.tip = entry
        log.info("connected block %d %s (%d txs)", entry.height, entry.hash.hex()[:16],
                 len(block.txs))
        return block

    def _disconnect_tip(self) -> Block:
        entry = self.tip
        if entry.parent is None:
            raise RuntimeError("cannot disconnect genesis")
        block = self.get_block(entry.hash)
        undo = self.store.get_undo(entry.hash)
        self.store.commit_disconnect(entry.hash, entry.height, entry.parent.hash, undo,
                                     [tx.txid() for tx in block.txs])
        self.main.pop()
        self.tip = entry.parent
        log.info("disconnected block %d %s", entry.height, entry.hash.hex()[:16])
        return block
