"""Length-prefixed frames and bounded msgpack decoding (SPEC §11).

A frame is a 4-byte big-endian payload length L (L ≤ 4 MiB) followed by
`packb([msg_type, payload])`. Decoding caps every msgpack length by the frame size and
refuses extension types, so a hostile frame cannot make us allocate unbounded memory.
"""

from __future__ import annotations

import struct

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


def decode_message(body: bytes) -> tuple[str, object]:
    """Decode one frame body into `(msg_type, payload)`.

    The payload is returned as decoded msgpack (lists, bytes, str, int...); its shape is
    checked per message type by `p2p.messages`. Raises ProtocolViolation("malformed...")
    on any decoding error, trailing bytes, extension types or a bad envelope.
    """
    limit = len(body)
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit // 2,
            max_ext_len=0,
            ext_hook=_reject_ext,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolViolation(f"malformed frame: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 2:
        raise ProtocolViolation("malformed frame: not a [msg_type, payload] array")
    msg_type, payload = obj
    if (
        not isinstance(msg_type, str)
        or not 0 < len(msg_type) <= MAX_MSG_TYPE_LEN
        or not msg_type.isascii()
        or not msg_type.isprintable()
    ):
        raise ProtocolViolation("malformed frame: bad msg_type")
    return msg_type, payload


class FrameReader:
    """Reads whole frame bodies from a trio stream; safe to cancel between calls.

    Partial data stays in an internal buffer (at most one frame plus one chunk), so a
    `move_on_after` around `read_frame` loses nothing. SPEC §11.
    """

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def read_frame(self) -> bytes:
        """Return the next frame body (without its length prefix).

        Raises ProtocolViolation if the announced length exceeds MAX_FRAME_BYTES,
        PeerDisconnect on end of stream; transport errors propagate
        (trio.BrokenResourceError, OSError).
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
            data = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                raise PeerDisconnect("connection closed by peer")
            self._buffer += data
