"""Fuzz ``Header.decode`` (SPEC §10): only DecodeError; decoded headers re-encode exactly."""

from consensus.block import Header
from consensus.errors import DecodeError
from tests.fuzz.samples import GENESIS, HEADER

EXPECTED = (DecodeError,)
SEEDS = [HEADER.encode(), GENESIS.header.encode()]


def target(data: bytes) -> None:
    header = Header.decode(data)
    assert header.encode() == data
    header.hash()
