"""Fuzz ``decode_undo`` (the store's undo records): only DecodeError (issue 6 found
ValueError/TypeError here); a decoded record re-encodes exactly."""

from consensus.errors import DecodeError
from consensus.state import decode_undo, encode_undo

EXPECTED = (DecodeError,)
SEEDS = [encode_undo({b"a" + b"\x01" * 32: b"\x92\x05\x01", b"burned": None, b"v" + b"\0" * 8: b"\x02" * 32}),
         encode_undo({}), encode_undo({b"issued": b"\xcf" + b"\x01" * 8})]


def target(data: bytes) -> None:
    undo = decode_undo(data)
    assert encode_undo(undo) == data
