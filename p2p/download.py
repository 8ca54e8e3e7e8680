"""Network-wide block download scheduler for headers-first sync (SPEC §11).

One `BlockDownload` per Network decides which peer fetches which block, as Bitcoin
Core's `mapBlocksInFlight` / `FindNextBlocksToDownload` do:

- wanted hashes (chain order, oldest first) come from `ChainAccess.submit_headers`; each
  remembers which peers announced it (its sources);
- a block is in flight from at most one peer, each peer has at most
  MAX_BLOCKS_IN_FLIGHT (16) in flight, and getdata is topped up in batches as blocks
  arrive, so a peer never waits for a round trip per block;
- the queue is refilled from each peer's best announced header (one cheap
  `submit_headers([header])` of a known header returns the next missing blocks on its
  path), so sync continues batch after batch whether or not anyone mines;
- a peer that has requests outstanding and has delivered no block for
  `stall_seconds` is stalling: its requests are reassigned to other peers that can serve
  them, and it gets no new work until it delivers again (the session drops it after its
  own longer timeout).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from p2p import messages
from p2p.interface import ChainAccess
from p2p.peer import Peer

logger = logging.getLogger("p2p")

MAX_BLOCKS_IN_FLIGHT = 16  # per peer (SPEC §11)
TOP_UP_BATCH = 4  # send getdata once this many slots are free (or the peer is idle)
LOW_WATER = 256  # refill the queue from the peers' header tips below this many hashes
SCAN_WINDOW = 1024  # queued hashes looked at when choosing work for one peer
STALL_SECONDS = 5.0  # no block for this long with requests outstanding = stalling
TICK_SECONDS = 0.5  # how often stalls are checked
PROGRESS_SECONDS = 10.0  # how often download progress is logged while blocks arrive


@dataclass(eq=False)
class _PeerDownload:
    peer: Peer
    in_flight: dict[bytes, float] = field(default_factory=dict)  # hash -> requested at
    tip: bytes | None = None  # raw best header the peer announced, not yet fully queued
    progress_at: float = 0.0  # last block received (or first request after idle)
    stalling: bool = False


class BlockDownload:
    """Assigns wanted blocks to peers; all methods are non-blocking except `run`.

    Times are trio clock seconds. Not thread-safe (one trio run).
    """

    def __init__(self, chain: ChainAccess, *, stall_seconds: float = STALL_SECONDS) -> None:
        self.chain = chain
        self.stall_seconds = stall_seconds
        self._peers: dict[int, _PeerDownload] = {}
        self._queue: dict[bytes, set[int]] = {}  # unassigned wanted hash -> source peer ids
        self._retry: dict[bytes, set[int]] = {}  # released hashes, served before _queue
        self._in_flight: dict[bytes, int] = {}  # hash -> peer id fetching it
        self._sources: dict[bytes, set[int]] = {}  # sources of in-flight hashes
        self._refill = trio.Event()
        self.blocks_received = 0  # counters for logs and tests
        self.reassigned = 0

    # --- peers --------------------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        """A peer finished its handshake."""
        self._peers[peer.peer_id] = _PeerDownload(peer)

    def remove_peer(self, peer: Peer) -> None:
        """A peer went away: its in-flight blocks go back to the front of the queue."""
        state = self._peers.pop(peer.peer_id, None)
        if state is None:
            return
        for block_hash in state.in_flight:
            self._release(block_hash, drop_source=peer.peer_id)
        for table in (self._queue, self._retry):
            for sources in table.values():
                sources.discard(peer.peer_id)
        self._dispatch()

    # --- queries ------------------------------------------------------------------

    def is_tracked(self, block_hash: bytes) -> bool:
        """True if the block is queued or in flight from some peer."""
        return block_hash in self._in_flight or block_hash in self._queue or (
            block_hash in self._retry
        )

    def in_flight(self, peer: Peer) -> int:
        """How many blocks `peer` has been asked for and not delivered."""
        state = self._peers.get(peer.peer_id)
        return len(state.in_flight) if state else 0

    def queued(self) -> int:
        """Wanted hashes not yet assigned to any peer."""
        return len(self._queue) + len(self._retry)

    def stall_deadline(self, peer: Peer, timeout: float) -> float:
        """When `peer` has failed to deliver for `timeout` s (inf if nothing in flight)."""
        state = self._peers.get(peer.peer_id)
        if state is None or not state.in_flight:
            return math.inf
        return state.progress_at + timeout

    def is_idle(self, peer: Peer) -> bool:
        """True if nothing is in flight from `peer` and nothing it announced is queued."""
        state = self._peers.get(peer.peer_id)
        if state is None:
            return True
        if state.in_flight or state.tip is not None:
            return False
        pid = peer.peer_id
        return not any(pid in s for s in self._queue.values()) and not any(
            pid in s for s in self._retry.values()
        )

    # --- events from sessions -------------------------------------------------------

    def add_wanted(self, peer: Peer, hashes: Iterable[bytes], tip: bytes | None) -> None:
        """`peer` announced headers: queue `hashes` (chain order) with it as a source.

        `tip` is the raw last header of the announcement, kept to refill the queue.
        """
        state = self._peers.get(peer.peer_id)
        if state is None:
            return
        if tip is not None:
            state.tip = tip
        self._add(peer.peer_id, hashes)
        self._dispatch()

    def block_message(self, peer: Peer) -> None:
        """A `block` frame arrived from `peer` (before the node has looked at it)."""
        state = self._peers.get(peer.peer_id)
        if state is not None:
            state.progress_at = trio.current_time()
            state.stalling = False

    def block_received(self, peer: Peer, block_hash: bytes) -> None:
        """The node has processed `block_hash` (any status) received from `peer`."""
        self.blocks_received += 1
        owner = self._in_flight.pop(block_hash, None)
        self._sources.pop(block_hash, None)
        if owner is not None and owner in self._peers:
            self._peers[owner].in_flight.pop(block_hash, None)
        self._queue.pop(block_hash, None)
        self._retry.pop(block_hash, None)
        self._dispatch()

    def not_found(self, peer: Peer, block_hash: bytes) -> None:
        """`peer` cannot serve `block_hash`: ask another source, or drop it."""
        state = self._peers.get(peer.peer_id)
        if state is not None and block_hash in state.in_flight:
            del state.in_flight[block_hash]
            self._release(block_hash, drop_source=peer.peer_id)
        else:
            for table in (self._queue, self._retry):
                if block_hash in table:
                    table[block_hash].discard(peer.peer_id)
        self._dispatch()

    # --- the background task -----------------------------------------------------------

    async def run(self) -> None:
        """Refill the queue from peers' header tips and reassign stalled requests, forever."""
        logged_at, logged_blocks = trio.current_time(), 0
        while True:
            with trio.move_on_after(TICK_SECONDS):
                await self._refill.wait()
            now = trio.current_time()
            if now - logged_at >= PROGRESS_SECONDS:
                if self.blocks_received > logged_blocks:
                    self._log_progress((self.blocks_received - logged_blocks) / (now - logged_at))
                logged_at, logged_blocks = now, self.blocks_received
            if self._refill.is_set():
                self._refill = trio.Event()
                await self._refill_from_tips()
            self._reassign_stalled()
            self._dispatch()

    async def _refill_from_tips(self) -> None:
        by_tip: dict[bytes, list[int]] = {}
        for pid, state in self._peers.items():
            if state.tip is not None:
                by_tip.setdefault(state.tip, []).append(pid)
        for tip, pids in by_tip.items():
            result = await self.chain.submit_headers([tip])
            live = [pid for pid in pids if pid in self._peers]
            new = [h for h in result.wanted if not self.is_tracked(h)]
            if result.invalid_reason or not new:
                for pid in live:  # everything it announced is queued, in flight or stored
                    if self._peers[pid].tip == tip:
                        self._peers[pid].tip = None
            for pid in live:
                self._add(pid, result.wanted)
            self._dispatch()

    # --- internals ------------------------------------------------------------------

    def _log_progress(self, rate: float) -> None:
        best_known = max((s.peer.height for s in self._peers.values()), default=0)
        logger.info(
            "download: height %d of %d announced, %.0f blocks/s, %d in flight from %d peers,"
            " %d queued", self.chain.best_height(), best_known, rate, len(self._in_flight),
            sum(1 for s in self._peers.values() if s.in_flight), self.queued(),
        )

    def _add(self, pid: int, hashes: Iterable[bytes]) -> None:
        for block_hash in hashes:
            if block_hash in self._in_flight:
                self._sources.setdefault(block_hash, set()).add(pid)
            elif block_hash in self._retry:
                self._retry[block_hash].add(pid)
            elif block_hash in self._queue:
                self._queue[block_hash].add(pid)
            elif not self.chain.has_block(block_hash):
                self._queue[block_hash] = {pid}

    def _release(self, block_hash: bytes, *, drop_source: int) -> None:
        """Take `block_hash` out of flight and queue it for another source, if any."""
        self._in_flight.pop(block_hash, None)
        sources = self._sources.pop(block_hash, set())
        sources.discard(drop_source)
        sources &= self._peers.keys()
        if sources and not self.chain.has_block(block_hash):
            self._retry[block_hash] = sources

    def _reassign_stalled(self) -> None:
        now = trio.current_time()
        for state in list(self._peers.values()):
            if not state.in_flight or now - state.progress_at < self.stall_seconds:
                continue
            movable = [
                h for h in state.in_flight
                if any(pid != state.peer.peer_id and self._has_room(pid)
                       for pid in self._sources.get(h, ()))
            ]
            if not movable and state.stalling:
                continue
            if not state.stalling:
                logger.info(
                    "peer %s: no block for %.0f s with %d requested; reassigning %d",
                    state.peer.address, now - state.progress_at, len(state.in_flight),
                    len(movable),
                )
            state.stalling = True
            for block_hash in movable:
                del state.in_flight[block_hash]
                self._release(block_hash, drop_source=state.peer.peer_id)
                self.reassigned += 1

    def _has_room(self, pid: int) -> bool:
        state = self._peers.get(pid)
        return (
            state is not None
            and not state.stalling
            and len(state.in_flight) < MAX_BLOCKS_IN_FLIGHT
        )

    def _dispatch(self) -> None:
        """Top up every peer's in-flight window from the queue (retries first)."""
        now = trio.current_time()
        for pid, state in self._peers.items():
            free = MAX_BLOCKS_IN_FLIGHT - len(state.in_flight)
            if state.stalling or free <= 0 or (state.in_flight and free < TOP_UP_BATCH):
                continue
            batch = self._take(pid, free)
            if not batch:
                continue
            if not state.in_flight:
                state.progress_at = now
            for block_hash in batch:
                state.in_flight[block_hash] = now
                self._in_flight[block_hash] = pid
                state.peer.known.add(block_hash)
            state.peer.send_frame(
                messages.build_inventory("getdata", [("block", h) for h in batch])
            )
        if self.queued() < LOW_WATER and any(s.tip is not None for s in self._peers.values()):
            self._refill.set()

    def _take(self, pid: int, count: int) -> list[bytes]:
        batch: list[bytes] = []
        for table in (self._retry, self._queue):
            chosen: list[bytes] = []
            for scanned, (block_hash, sources) in enumerate(table.items()):
                if len(batch) + len(chosen) >= count or scanned >= SCAN_WINDOW:
                    break
                if pid in sources:
                    chosen.append(block_hash)
            for block_hash in chosen:
                sources = table.pop(block_hash)
                if not self.chain.has_block(block_hash):
                    self._sources[block_hash] = sources
                    batch.append(block_hash)
        return batch
