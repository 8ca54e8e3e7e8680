"""A blocking-socket peer that speaks the SPEC §11 wire protocol, for functional tests.

It lets a test inject bad frames, out-of-order messages, invalid blocks and
transactions, and observe the node's reaction (replies, disconnects, bans). It is
written independently of p2p/ on purpose: the test tool must not share the code under
test. Every wait is bounded by a timeout.

Because all test nodes share 127.0.0.1 and bans are per IP, a RawPeer connects from
127.0.0.2 by default.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time

import msgpack

MAX_FRAME_BYTES = 4 * 1024 * 1024  # SPEC §11 frame limit
PROTOCOL_VERSION = 1


class RawPeer:
    """One TCP connection to a node, driven synchronously by a test."""

    def __init__(self, sock: socket.socket, timeout: float = 10) -> None:
        self.sock = sock
        self.timeout = timeout  # default bound for sends and waits, seconds
        self.node_nonce: int | None = None  # nonce we sent in our hello
        self._buffer = bytearray()

    @classmethod
    def connect(
        cls, host: str, port: int, *, local_host: str | None = "127.0.0.2", timeout: float = 10
    ) -> RawPeer:
        """Open a connection from `local_host` (None: the default source address).

        Raises OSError (e.g. ConnectionRefusedError, TimeoutError) if it cannot connect.
        """
        source = (local_host, 0) if local_host else None
        sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- sending --------------------------------------------------------------------

    def send_hello(
        self,
        genesis_hash: bytes,
        best_height: int = 0,
        best_hash: bytes | None = None,
        listen_port: int = 0,
        node_nonce: int | None = None,
        *,
        user_agent: str = "rawpeer/0.1",
        protocol_version: int = PROTOCOL_VERSION,
    ) -> int:
        """Send `hello`; `best_hash` defaults to `genesis_hash`. Returns the node_nonce used."""
        nonce = secrets.randbits(64) if node_nonce is None else node_nonce
        self.node_nonce = nonce
        best = genesis_hash if best_hash is None else best_hash
        self.send_msg(
            "hello",
            [protocol_version, genesis_hash, best_height, best, listen_port, nonce, user_agent],
        )
        return nonce

    def send_msg(self, msg_type: str, payload: object) -> None:
        """Send one well-framed message `[msg_type, payload]`. Raises OSError."""
        self.send_raw_frame(msgpack.packb([msg_type, payload]))

    def send_raw_frame(self, payload_bytes: bytes) -> None:
        """Send arbitrary bytes as one frame (correct length prefix). Raises OSError."""
        self.send_bytes(struct.pack(">I", len(payload_bytes)) + payload_bytes)

    def send_bytes(self, raw: bytes) -> None:
        """Send raw bytes with no framing at all. Raises OSError."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(raw)

    # --- receiving ------------------------------------------------------------------

    def _read_frame(self, deadline: float) -> bytes:
        while True:
            if len(self._buffer) >= 4:
                (length,) = struct.unpack_from(">I", self._buffer)
                if length > MAX_FRAME_BYTES:
                    raise ValueError(f"node sent an over-limit frame of {length} bytes")
                if len(self._buffer) >= 4 + length:
                    body = bytes(self._buffer[4 : 4 + length])
                    del self._buffer[: 4 + length]
                    return body
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete frame before the deadline")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)  # raises TimeoutError / ConnectionError
            if not data:
                raise ConnectionError("connection closed by the node")
            self._buffer += data

    def recv_msg(self, timeout: float | None = None) -> tuple[str, object]:
        """Next message as `(msg_type, payload)`.

        Raises TimeoutError if none arrives in `timeout` seconds, ConnectionError if the
        node closed the connection.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        body = self._read_frame(deadline)
        msg_type, payload = msgpack.unpackb(body, raw=False, strict_map_key=True)
        return msg_type, payload

    def wait_for(
        self, msg_type: str, timeout: float | None = None, *, answer_pings: bool = True
    ) -> object:
        """Skip messages until one of `msg_type` arrives; return its payload.

        Answers `ping` with `pong` meanwhile (unless asked not to). Raises TimeoutError
        or ConnectionError.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            got_type, payload = self.recv_msg(max(0.0, deadline - time.monotonic()))
            if got_type == msg_type:
                return payload
            if got_type == "ping" and answer_pings:
                self.send_msg("pong", payload)

    def is_disconnected(self, timeout: float | None = None) -> bool:
        """True if the node closes the connection within `timeout` s (messages are discarded)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while True:
                self._read_frame(deadline)
        except TimeoutError:
            return False
        except (ConnectionError, OSError, ValueError):
            return True

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()
