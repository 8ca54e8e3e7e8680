"""Fuzz ``EscrowState.decode`` (SPEC §3.2 state record): only DecodeError; exact round trip."""

from consensus.errors import DecodeError
from consensus.escrow import EscrowState
from tests.fuzz.samples import ESCROW

EXPECTED = (DecodeError,)
SEEDS = [ESCROW.encode(), ESCROW.replace(merchants=(), broken=True).encode()]


def target(data: bytes) -> None:
    escrow = EscrowState.decode(data)
    assert escrow.encode() == data
