"""One connection's state: identity, send buffer bounded in bytes, known-inventory set (SPEC §11)."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque

import trio

from p2p.messages import Hello

logger = logging.getLogger("p2p")

SEND_BUFFER_BYTES = 1024 * 1024  # soft limit: above it the peer's requests wait (fPauseSend)
SEND_BUFFER_HARD_BYTES = SEND_BUFFER_BYTES + 4 * 1024 * 1024 + 64  # beyond: disconnect
WRITE_CHUNK_BYTES = 256 * 1024  # small frames are coalesced into writes of up to this size
KNOWN_INVENTORY = 4096  # hashes remembered per peer
WRITE_TIMEOUT = 60.0  # seconds one write may take to hand to the kernel


class KnownSet:
    """A bounded set of hashes, forgetting the oldest first (SPEC §11 "bounded per-peer set")."""

    def __init__(self, capacity: int = KNOWN_INVENTORY) -> None:
        self._capacity = capacity
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def add(self, item: bytes) -> None:
        """Remember `item`, evicting the oldest entry beyond capacity."""
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


def format_address(host: str, port: int) -> str:
    """`host:port`, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Peer:
    """A connected peer: socket identity, hello data and its send buffer.

    Frames are queued without blocking by `send_frame`; `run_writer` drains them onto
    the stream. The buffer is bounded in bytes as Bitcoin Core's: above
    SEND_BUFFER_BYTES the session stops serving this peer's requests until it drains
    (`wait_send_drained`); a peer whose buffer would pass SEND_BUFFER_HARD_BYTES
    (only reachable by not reading while we announce to it) is closed, so a slow reader
    never blocks or bloats the node (SPEC §11).
    """

    def __init__(
        self,
        peer_id: int,
        stream: trio.abc.Stream,
        ip: str,
        port: int,
        *,
        inbound: bool,
        target: tuple[str, int] | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.stream = stream
        self.ip = ip  # remote IP as a string: the ban key
        self.port = port  # remote TCP port
        self.inbound = inbound
        self.target = target  # (host, port) we dialled, None for inbound
        self.hello: Hello | None = None  # set once the handshake completes
        self.height = 0  # best height we believe the peer has
        self.known = KnownSet()
        self.close_reason = ""
        self.self_connection = False  # the hello carried our own node_nonce
        self.closed = trio.Event()
        self.cancel_scope = trio.CancelScope()
        self.connected_at = trio.current_time()
        self.last_block_at = 0.0  # when it last gave us a new block (eviction protection)
        self.last_tx_at = 0.0  # when it last gave us a new transaction
        self.ping_rtt = math.inf  # best ping round trip seen, seconds
        self.total_queued = 0  # bytes ever queued for this peer
        self.total_written = 0  # bytes ever handed to the kernel for this peer
        self.total_dequeued = 0  # bytes the writer has taken from the queue (being written)
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wake_writer = trio.Event()
        self._drained = trio.Event()
        self._drained.set()

    @property
    def address(self) -> str:
        """The remote socket address as `host:port`."""
        return format_address(self.ip, self.port)

    @property
    def node_nonce(self) -> int | None:
        """The peer's node_nonce from its hello, None before the handshake."""
        return self.hello.node_nonce if self.hello else None

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where the peer accepts connections: the dialled target, or IP + hello listen_port."""
        if self.target is not None:
            return self.target
        if self.hello is not None and self.hello.listen_port:
            return (self.ip, self.hello.listen_port)
        return None

    def close(self, reason: str) -> None:
        """End this peer's tasks (idempotent; the first reason is kept)."""
        if not self.close_reason:
            self.close_reason = reason
        self.cancel_scope.cancel()

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the send buffer."""
        return self._queued_bytes

    @property
    def send_paused(self) -> bool:
        """True while the send buffer is at or above SEND_BUFFER_BYTES."""
        return self._queued_bytes >= SEND_BUFFER_BYTES

    def send_frame(self, frame: bytes) -> bool:
        """Queue one frame without blocking; False (and the peer closed) on overflow."""
        if self.close_reason:
            return False
        if self._queued_bytes + len(frame) > SEND_BUFFER_HARD_BYTES:
            self._overflow()
            return False
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self.total_queued += len(frame)
        if self._queued_bytes >= SEND_BUFFER_BYTES:
            self._drained = trio.Event() if self._drained.is_set() else self._drained
        self._wake_writer.set()
        return True

    async def wait_send_drained(self, timeout: float) -> bool:
        """Wait until the send buffer is below SEND_BUFFER_BYTES; False after `timeout` s."""
        if not self.send_paused:
            return True
        with trio.move_on_after(timeout):
            await self._drained.wait()
            return True
        return False

    def _overflow(self) -> None:
        logger.info("peer %s: send buffer overflow, disconnecting", self.address)
        self.close("send buffer overflow")

    async def run_writer(self) -> None:
        """Drain the send buffer onto the stream until cancelled; close the peer on errors.

        Consecutive small frames are joined into one write of up to WRITE_CHUNK_BYTES.
        """
        try:
            while True:
                while not self._queue:
                    await self._wake_writer.wait()
                    self._wake_writer = trio.Event()
                chunk = [self._queue.popleft()]
                size = len(chunk[0])
                while self._queue and size + len(self._queue[0]) <= WRITE_CHUNK_BYTES:
                    frame = self._queue.popleft()
                    chunk.append(frame)
                    size += len(frame)
                self.total_dequeued += size
                with trio.fail_after(WRITE_TIMEOUT):
                    await self.stream.send_all(chunk[0] if len(chunk) == 1 else b"".join(chunk))
                self._queued_bytes -= size
                self.total_written += size
                if self._queued_bytes < SEND_BUFFER_BYTES:
                    self._drained.set()
        except trio.TooSlowError:
            self.close("send timed out")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.close(f"send failed: {exc!r}")
