"""Length-prefixed frames and bounded msgpack decoding (SPEC §11).

A frame is a 4-byte big-endian payload length L (L ≤ 4 MiB) followed by
`packb([msg_type, payload])`. The reader parses the envelope head by hand, so the
msg_type (and its own byte limit, see `p2p.decode.PAYLOAD_LIMITS`) is known before the
body is buffered; payloads are then decoded under per-type caps by `p2p.decode`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import msgpack
import trio

from p2p.errors import PeerDisconnect, ProtocolViolation

MAX_FRAME_BYTES = 4 * 1024 * 1024  # largest payload length L (SPEC §11)
LENGTH_PREFIX_BYTES = 4
MAX_MSG_TYPE_LEN = 32  # "a short ASCII string"
RECEIVE_CHUNK_BYTES = 65536


class FrameTooLarge(ValueError):
    """An outgoing message would exceed MAX_FRAME_BYTES."""


def msgpack_array_header(count: int) -> bytes:
    """The msgpack array header for `count` items, in the smallest form packb emits."""
    if count < 0 or count >= 2**32:
        raise ValueError(f"array length out of range: {count}")
    if count < 16:
        return bytes([0x90 | count])
    if count < 2**16:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def frame_body(body: bytes) -> bytes:
    """Prefix an encoded message with its 4-byte big-endian length.

    Raises FrameTooLarge if `body` is longer than MAX_FRAME_BYTES.
    """
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"message of {len(body)} bytes exceeds the frame limit")
    return struct.pack(">I", len(body)) + body


def encode_message(msg_type: str, payload: object) -> bytes:
    """A complete frame for `[msg_type, payload]` (payload any msgpack-able object).

    Raises FrameTooLarge when the message does not fit in one frame.
    """
    return frame_body(msgpack.packb([msg_type, payload]))


def encode_raw_message(msg_type: str, raw_payload: bytes) -> bytes:
    """A frame whose payload is already msgpack-encoded (spliced, not re-encoded).

    `raw_payload` must be exactly one msgpack object. Raises FrameTooLarge.
    """
    return frame_body(msgpack_array_header(2) + msgpack.packb(msg_type) + raw_payload)


def _reject_ext(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack extension type {code} not allowed")


def parse_envelope_head(head: bytes, frame_length: int) -> tuple[str, int] | None:
    """`(msg_type, header_length)` from the first bytes of a frame body, parsed by hand.

    The body must start with a 2-array header (0x92) and a str msg_type of 1-32
    printable ASCII bytes. Returns None if `head` is too short to tell yet (and shorter
    than `frame_length`). Raises ProtocolViolation("malformed frame...").
    """
    if len(head) < 2:
        if len(head) >= frame_length:
            raise ProtocolViolation("malformed frame: too short")
        return None
    if head[0] != 0x92:
        raise ProtocolViolation("malformed frame: not a [msg_type, payload] array")
    if 0xA0 <= head[1] <= 0xBF:
        length, start = head[1] - 0xA0, 2
    elif head[1] == 0xD9:
        if len(head) < 3:
            if len(head) >= frame_length:
                raise ProtocolViolation("malformed frame: too short")
            return None
        length, start = head[2], 3
    else:
        raise ProtocolViolation("malformed frame: bad msg_type")
    end = start + length
    if not 0 < length <= MAX_MSG_TYPE_LEN:
        raise ProtocolViolation("malformed frame: bad msg_type")
    if end >= frame_length:
        raise ProtocolViolation("malformed frame: no payload")
    if len(head) < end:
        return None
    raw_type = bytes(head[start:end])
    if not all(0x20 <= b < 0x7F for b in raw_type):
        raise ProtocolViolation("malformed frame: bad msg_type")
    return raw_type.decode("ascii"), end


def decode_message(body: bytes) -> tuple[str, object]:
    """Decode one whole frame body into `(msg_type, payload object)` (tools and tests).

    The node itself never calls this: it reads with `FrameReader.read_message` and
    decodes payloads with `p2p.decode`. Lengths are capped by the body size.
    Raises ProtocolViolation("malformed...").
    """
    parsed = parse_envelope_head(body, len(body))
    if parsed is None:
        raise ProtocolViolation("malformed frame: too short")
    msg_type, start = parsed
    payload = body[start:]
    limit = len(payload)
    try:
        obj = msgpack.unpackb(
            payload, raw=False, strict_map_key=True, use_list=True, max_str_len=limit,
            max_bin_len=limit, max_array_len=limit, max_map_len=limit // 2, max_ext_len=0,
            ext_hook=_reject_ext,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolViolation(f"malformed frame: {exc.__class__.__name__}: {exc}") from None
    return msg_type, obj


class FrameReader:
    """Reads messages from a trio stream; safe to cancel between calls.

    Partial data stays in an internal buffer, so a `move_on_after` around
    `read_message` loses nothing. The msg_type is read from the frame head before the
    body is buffered, so an over-limit message is refused after at most 39 bytes and an
    unknown one is skipped without being stored. SPEC §11.
    """

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._skipping = 0  # bytes of an unknown message still to discard
        self.bytes_received = 0  # all bytes read from the stream

    async def _receive(self) -> None:
        data = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
        if not data:
            raise PeerDisconnect("connection closed by peer")
        self.bytes_received += len(data)
        if self._skipping:
            dropped = min(self._skipping, len(data))
            self._skipping -= dropped
            data = data[dropped:]
        self._buffer += data

    async def read_message(
        self, limits: Mapping[str, int], *, only_known: bool = False
    ) -> tuple[str, bytes | None]:
        """Next message as `(msg_type, payload bytes)`.

        limits: largest payload in bytes per known msg_type. An unknown msg_type is
        skipped and returned with payload None, unless `only_known` (before `hello`),
        which makes it a violation. Raises ProtocolViolation (length above
        MAX_FRAME_BYTES or the type's limit, malformed head, type not allowed),
        PeerDisconnect on end of stream; transport errors propagate.
        """
        while True:
            while self._skipping:
                await self._receive()
            buffer = self._buffer
            if len(buffer) >= LENGTH_PREFIX_BYTES:
                (length,) = struct.unpack_from(">I", buffer)
                if length > MAX_FRAME_BYTES:
                    raise ProtocolViolation(f"over-limit frame of {length} bytes")
                head = buffer[LENGTH_PREFIX_BYTES : LENGTH_PREFIX_BYTES + 3 + MAX_MSG_TYPE_LEN]
                parsed = parse_envelope_head(head, length)
                if parsed is not None:
                    msg_type, head_length = parsed
                    limit = limits.get(msg_type)
                    if limit is None and only_known:
                        raise ProtocolViolation(f"message before hello: {msg_type!r}")
                    payload_length = length - head_length
                    if limit is not None and payload_length > limit:
                        raise ProtocolViolation(
                            f"over-limit {msg_type}: {payload_length} > {limit} bytes"
                        )
                    end = LENGTH_PREFIX_BYTES + length
                    if limit is None:  # unknown type: discard without buffering
                        self._skipping = max(0, end - len(buffer))
                        del buffer[:end]
                        return msg_type, None
                    if len(buffer) >= end:
                        payload = bytes(buffer[LENGTH_PREFIX_BYTES + head_length : end])
                        del buffer[:end]
                        return msg_type, payload
            await self._receive()

    async def read_frame(self) -> bytes:
        """Return the next whole frame body, any type (tests and tools).

        Raises ProtocolViolation if the length exceeds MAX_FRAME_BYTES, PeerDisconnect
        on end of stream.
        """
        while True:
            if len(self._buffer) >= LENGTH_PREFIX_BYTES:
                (length,) = struct.unpack_from(">I", self._buffer)
                if length > MAX_FRAME_BYTES:
                    raise ProtocolViolation(f"over-limit frame of {length} bytes")
                end = LENGTH_PREFIX_BYTES + length
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[LENGTH_PREFIX_BYTES:end])
                    del self._buffer[:end]
                    return body
            await self._receive()
