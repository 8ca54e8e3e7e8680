"""Fuzz target: a byte stream read as SPEC §11 frames, each payload decoded as the
session would (p2p.framing.FrameReader.read_message, then p2p.decode.decode_payload).

The stream object never blocks, so the reader's coroutine is driven by hand without an
event loop. Before the first frame the reader is in its pre-hello mode (hello only).
"""

from __future__ import annotations

from p2p.decode import PAYLOAD_LIMITS, decode_payload
from p2p.errors import PeerDisconnect, ProtocolViolation
from p2p.framing import FrameReader
from tests.fuzz._p2p_common import frame_seeds

EXPECTED: tuple[type[BaseException], ...] = (ProtocolViolation, PeerDisconnect)
SEEDS: list[bytes] = frame_seeds()
HELLO_ONLY = {"hello": PAYLOAD_LIMITS["hello"]}
MAX_MESSAGES = 64


class _BytesStream:
    """A receive stream over fixed bytes, in chunks of 7 to exercise reassembly."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def remaining(self) -> int:
        """Bytes not yet handed to the reader."""
        return len(self._data)

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        chunk, self._data = bytes(self._data[:7]), self._data[7:]
        return chunk


def _run(coro):
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the reader awaited something other than the stream")


def target(data: bytes) -> None:
    stream = _BytesStream(data)
    reader = FrameReader(stream)
    for index in range(MAX_MESSAGES):
        if index and not stream.remaining() and not reader._buffer:
            return  # the stream ended between two frames: a clean end, not an error
        if index == 0 and len(data) % 2:  # half the inputs start in pre-hello mode
            msg_type, payload = _run(reader.read_message(HELLO_ONLY, only_known=True))
        else:
            msg_type, payload = _run(reader.read_message(PAYLOAD_LIMITS))
        if payload is not None:
            decode_payload(msg_type, payload)
