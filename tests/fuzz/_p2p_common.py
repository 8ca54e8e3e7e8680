"""Shared pieces of the p2p fuzz targets: valid seeds for every SPEC §11 message and
a target factory for the per-type payload decoders of `p2p.decode`.

Each `fuzz_p2p_<msg_type>.py` module exposes `EXPECTED`, `SEEDS` and `target` as the
fuzz runner's contract asks; the only exception a decoder may raise on hostile bytes
is ProtocolViolation.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from p2p import decode
from p2p.errors import ProtocolViolation

H1, H2 = b"\x01" * 32, b"\x02" * 32
HEADER = [1, 7, H1, 1_700_000_007, b"\xff" * 32, 3, H2, H1, [H1, H2]]
BLOCK = [HEADER, [[1, 0, H1, 0, 0, [[H2, 5_000_000_000]], b"\x00" * 64]]]

PAYLOAD_SEEDS: dict[str, list[object]] = {
    "hello": [[1, H1, 5, H2, 8333, 2**64 - 1, "microcash/0.1"], [1, H1, 0, H1, 0, 0, ""]],
    "ping": [[0], [2**64 - 1]],
    "pong": [[12345]],
    "inv": [[["block", H1], ["tx", H2]], []],
    "getdata": [[["block", H1]] * 16],
    "notfound": [[["tx", H2]]],
    "block": [[BLOCK]],
    "tx": [[BLOCK[1][0]]],
    "getheaders": [[[H1, H2], bytes(32)], [[H1] * 64, H2]],
    "headers": [[[HEADER] * 3], [[]]],
    "getaddr": [[]],
    "addr": [[["127.0.0.1", 8333], ["::1", 1]], []],
    "watch": [[[H1, 0], [H2, 8]], []],
    "tktann": [[H1, [b"\x01\x00\x01" + H1 + b"\x00" * 8 + b"\x07" * 64] * 3], [H2, []]],
}


def payload_seeds(msg_type: str) -> list[bytes]:
    """Valid encoded payloads of `msg_type`."""
    return [msgpack.packb(p) for p in PAYLOAD_SEEDS[msg_type]]


def payload_target(msg_type: str) -> Callable[[bytes], None]:
    """A target decoding `data` as a `msg_type` payload under its own limits."""
    limit = decode.PAYLOAD_LIMITS[msg_type]

    def target(data: bytes) -> None:
        if len(data) > limit:  # the frame reader refuses these before decoding
            data = data[:limit]
        decode.decode_payload(msg_type, data)

    target.__doc__ = f"Decode a `{msg_type}` payload (SPEC §11); only ProtocolViolation allowed."
    return target


def frame_seeds() -> list[bytes]:
    """Complete frames (length prefix included) of every message type, and a stream."""
    frames = [
        _frame(t, p)
        for t, seeds in PAYLOAD_SEEDS.items()
        for p in seeds
    ]
    return frames + [b"".join(frames[:6]), _frame("future-type", {"k": [1]})]


def _frame(msg_type: str, payload: object) -> bytes:
    from p2p.framing import encode_message

    return encode_message(msg_type, payload)


EXPECTED_DECODE: tuple[type[BaseException], ...] = (ProtocolViolation,)
