"""Per-peer bookkeeping for headers-first block download (SPEC §11).

Pure state, no I/O: which blocks this peer should send us (in chain order), which are
in flight (at most 16), whether a `getheaders` is outstanding, and where to continue
when the peer sent a full batch of 2000 headers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

MAX_BLOCKS_IN_FLIGHT = 16  # per peer (SPEC §11)
MAX_BACKLOG = 2000  # wanted hashes held before continuing with getheaders


class PeerSync:
    """Download state for one peer; times are trio clock seconds."""

    def __init__(self, stall_timeout: float) -> None:
        self.stall_timeout = stall_timeout  # seconds without progress before giving up
        self.continue_from: bytes | None = None  # last hash of a full headers batch
        self._wanted: deque[bytes] = deque()
        self._wanted_set: set[bytes] = set()
        self._in_flight: set[bytes] = set()
        self._headers_asked_at: float | None = None
        self._progress_at = 0.0

    @property
    def in_flight(self) -> frozenset[bytes]:
        """Hashes requested with getdata and not yet received."""
        return frozenset(self._in_flight)

    @property
    def headers_outstanding(self) -> bool:
        """True while a getheaders to this peer is unanswered."""
        return self._headers_asked_at is not None

    def backlog(self) -> int:
        """Blocks wanted or in flight."""
        return len(self._wanted) + len(self._in_flight)

    def is_tracked(self, block_hash: bytes) -> bool:
        """True if the block is queued or in flight from this peer."""
        return block_hash in self._wanted_set or block_hash in self._in_flight

    def headers_requested(self, now: float) -> None:
        """Record that we sent getheaders."""
        self._headers_asked_at = now

    def headers_received(self, now: float) -> None:
        """Record that a headers message arrived."""
        self._headers_asked_at = None
        self._progress_at = now

    def add_wanted(self, hashes: list[bytes]) -> None:
        """Queue block hashes (chain order) to fetch, skipping ones already tracked."""
        for block_hash in hashes:
            if not self.is_tracked(block_hash):
                self._wanted.append(block_hash)
                self._wanted_set.add(block_hash)

    def next_requests(self, have_block: Callable[[bytes], bool], now: float) -> list[bytes]:
        """Pop hashes to getdata now, keeping ≤ MAX_BLOCKS_IN_FLIGHT in flight.

        Hashes the node already has are dropped.
        """
        batch: list[bytes] = []
        while self._wanted and len(self._in_flight) < MAX_BLOCKS_IN_FLIGHT:
            block_hash = self._wanted.popleft()
            self._wanted_set.discard(block_hash)
            if have_block(block_hash):
                continue
            if not self._in_flight:
                self._progress_at = now
            self._in_flight.add(block_hash)
            batch.append(block_hash)
        return batch

    def block_received(self, block_hash: bytes, now: float) -> None:
        """A block arrived (requested or not)."""
        if block_hash in self._in_flight:
            self._in_flight.discard(block_hash)
            self._progress_at = now

    def forget(self, block_hash: bytes) -> None:
        """The peer said notfound: stop waiting for this block."""
        self._in_flight.discard(block_hash)
        if block_hash in self._wanted_set:
            self._wanted_set.discard(block_hash)
            self._wanted.remove(block_hash)

    def wants_continuation(self) -> bool:
        """True if we should now ask for the next batch of headers."""
        return (
            self.continue_from is not None
            and not self.headers_outstanding
            and self.backlog() < MAX_BACKLOG
        )

    def stall_deadline(self) -> float:
        """When this peer counts as stalled (inf if we are not waiting for it)."""
        deadline = math.inf
        if self._headers_asked_at is not None:
            deadline = self._headers_asked_at + self.stall_timeout
        if self._in_flight:
            deadline = min(deadline, self._progress_at + self.stall_timeout)
        return deadline
