"""The block index: every accepted header, skip pointers, the main chain and the
candidate set of fork choice (SPEC §10 "Fork choice").

The candidate set follows Bitcoin Core's ``setBlockIndexCandidates``: every entry whose
whole path from genesis has block data and is not known invalid sits in a heap ordered
by cumulative work, then by arrival (``seq``). The best candidate is the heap's top,
found in O(1) after lazily dropping failed entries; adding one is O(log n). Ancestor
lookups use skip pointers (O(log n)), so no per-block cost grows with chain length.
"""

import heapq
from dataclasses import dataclass, field

from consensus.block import Header, compute_work

HEADER_VALID, HAVE_DATA, FAILED = 1, 2, 4
MAX_LOCATOR = 64


def _invert_lowest_one(n: int) -> int:
    return n & (n - 1)


def get_skip_height(height: int) -> int:
    """Height the skip pointer of a block at ``height`` jumps to (Bitcoin Core's)."""
    if height < 2:
        return 0
    if height & 1:
        return _invert_lowest_one(_invert_lowest_one(height - 1)) + 1
    return _invert_lowest_one(height)


@dataclass(eq=False)
class IndexEntry:
    """One known header, its canonical bytes, its place in the tree and what we know of
    its block."""

    hash: bytes
    header: Header
    header_bytes: bytes   # canonical encoding, served to getheaders as is
    parent: "IndexEntry | None"
    chainwork: int        # cumulative work up to and including this block
    status: int           # HEADER_VALID | HAVE_DATA | FAILED bits
    seq: int              # arrival order, for "ties keep the block seen first"
    skip: "IndexEntry | None" = None
    chain_has_data: bool = False
    fail_reason: str = ""
    children: list["IndexEntry"] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.header.height

    def get_ancestor(self, height: int) -> "IndexEntry":
        """The ancestor at ``height`` (``self`` if equal); O(log n) via skip pointers.
        Raises ``ValueError`` for a height above this entry."""
        if height > self.height or height < 0:
            raise ValueError(f"no ancestor at height {height} of {self.height}")
        walk, h_walk = self, self.height
        while h_walk > height:
            h_skip, h_skip_prev = get_skip_height(h_walk), get_skip_height(h_walk - 1)
            if walk.skip is not None and (h_skip == height or (
                    h_skip > height and not (h_skip_prev < h_skip - 2 and h_skip_prev >= height))):
                walk, h_walk = walk.skip, h_skip
            else:
                walk, h_walk = walk.parent, h_walk - 1
        return walk


class CandidateSet:
    """Entries that could be the tip, by most work then earliest seen (see module doc)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, IndexEntry]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, entry: IndexEntry) -> None:
        """Offer an entry whose path has data (O(log n))."""
        heapq.heappush(self._heap, (-entry.chainwork, entry.seq, entry))

    def best(self, tip: IndexEntry) -> IndexEntry:
        """Most-work valid candidate; ``tip`` when it ties (ties keep the tip)."""
        heap = self._heap
        while heap and heap[0][2].status & FAILED:
            heapq.heappop(heap)
        if not heap or heap[0][2].chainwork <= tip.chainwork:
            return tip
        return heap[0][2]


class BlockIndex:
    """Header tree, main chain (entries by height) and candidate set."""

    def __init__(self) -> None:
        self.entries: dict[bytes, IndexEntry] = {}
        self.main: list[IndexEntry] = []
        self.candidates = CandidateSet()
        self.next_seq = 0

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self.entries

    def get(self, block_hash: bytes) -> IndexEntry | None:
        """The entry of ``block_hash`` or ``None``."""
        return self.entries.get(block_hash)

    def insert(self, block_hash: bytes, header: Header, header_bytes: bytes,
               parent: IndexEntry | None, status: int, seq: int | None = None) -> IndexEntry:
        """Index a header below ``parent`` (``None`` for genesis); inherits FAILED."""
        if seq is None:
            seq = self.next_seq
        work = compute_work(header.target) + (parent.chainwork if parent else 0)
        entry = IndexEntry(block_hash, header, header_bytes, parent, work, status, seq)
        if parent is not None:
            parent.children.append(entry)
            entry.skip = parent.get_ancestor(get_skip_height(header.height))
            if parent.status & FAILED:
                entry.status |= FAILED
        self.entries[block_hash] = entry
        self.next_seq = max(self.next_seq, seq + 1)
        if entry.status & HAVE_DATA and (parent is None or parent.chain_has_data):
            self.mark_data(entry)
        return entry

    def mark_data(self, entry: IndexEntry) -> None:
        """Record that ``entry``'s block is stored; entries whose whole path now has data
        become candidates."""
        entry.status |= HAVE_DATA
        if entry.parent is not None and not entry.parent.chain_has_data:
            return
        stack = [entry]
        while stack:
            e = stack.pop()
            if e.status & HAVE_DATA and not e.chain_has_data:
                e.chain_has_data = True
                if not e.status & FAILED:
                    self.candidates.add(e)
                stack.extend(e.children)

    def mark_failed(self, entry: IndexEntry, reason: str) -> list[IndexEntry]:
        """Mark ``entry`` and its descendants invalid; returns the entries changed."""
        changed, stack = [], [entry]
        entry.fail_reason = reason
        while stack:
            e = stack.pop()
            e.status |= FAILED
            e.fail_reason = e.fail_reason or "bad-prevblk"
            changed.append(e)
            stack.extend(e.children)
        return changed

    # -- main chain ----------------------------------------------------------------------
    @property
    def tip(self) -> IndexEntry:
        return self.main[-1]

    def is_on_main(self, entry: IndexEntry) -> bool:
        """Whether ``entry`` is on the connected best chain (O(1))."""
        return entry.height < len(self.main) and self.main[entry.height] is entry

    def find_fork(self, entry: IndexEntry) -> IndexEntry:
        """Last common entry of ``entry``'s path and the main chain."""
        if entry.height > self.tip.height:
            entry = entry.get_ancestor(self.tip.height)
        while not self.is_on_main(entry):
            entry = entry.parent
        return entry

    def get_locator(self) -> list[bytes]:
        """Main-chain hashes, newest first, spaced exponentially, ending at genesis."""
        out, height, step = [], self.tip.height, 1
        while height > 0 and len(out) < MAX_LOCATOR - 1:
            out.append(self.main[height].hash)
            if len(out) >= 10:
                step *= 2
            height -= step
        out.append(self.main[0].hash)
        return out

    def get_headers_after(self, locator: list[bytes], stop_hash: bytes,
                          limit: int) -> list[bytes]:
        """Cached canonical main-chain headers after the first locator hash on the main
        chain (genesis if none), up to ``stop_hash`` or ``limit``."""
        start = 0
        for h in locator:
            entry = self.entries.get(h)
            if entry is not None and self.is_on_main(entry):
                start = entry.height + 1
                break
        out = []
        for entry in self.main[start:start + limit]:
            out.append(entry.header_bytes)
            if entry.hash == stop_hash:
                break
        return out
