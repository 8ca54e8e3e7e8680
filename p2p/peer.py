"""One connection's state: identity, bounded send queue, known-inventory set (SPEC §11)."""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from p2p.messages import Hello

logger = logging.getLogger("p2p")

SEND_QUEUE_FRAMES = 2048  # frames waiting for the writer
SEND_QUEUE_BYTES = 64 * 1024 * 1024  # bytes waiting for the writer
KNOWN_INVENTORY = 4096  # hashes remembered per peer
WRITE_TIMEOUT = 60.0  # seconds one frame may take to hand to the kernel


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
    """A connected peer: socket identity, hello data and its bounded send queue.

    Frames are queued without blocking by `send_frame`; `run_writer` drains them onto
    the stream. A peer whose queue overflows (SEND_QUEUE_FRAMES frames or
    SEND_QUEUE_BYTES bytes) is closed, so a slow reader never blocks the node (SPEC §11).
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
        self._send, self._receive = trio.open_memory_channel[bytes](SEND_QUEUE_FRAMES)
        self._queued_bytes = 0

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

    def send_frame(self, frame: bytes) -> bool:
        """Queue one frame without blocking; False (and the peer closed) on overflow."""
        if self.close_reason:
            return False
        if self._queued_bytes + len(frame) > SEND_QUEUE_BYTES:
            self._overflow()
            return False
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self._overflow()
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self._queued_bytes += len(frame)
        return True

    def _overflow(self) -> None:
        logger.info("peer %s: send queue overflow, disconnecting", self.address)
        self.close("send queue overflow")

    async def run_writer(self) -> None:
        """Drain the send queue onto the stream until cancelled; close the peer on errors."""
        try:
            async for frame in self._receive:
                with trio.fail_after(WRITE_TIMEOUT):
                    await self.stream.send_all(frame)
                self._queued_bytes -= len(frame)
        except trio.TooSlowError:
            self.close("send timed out")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.close(f"send failed: {exc!r}")
