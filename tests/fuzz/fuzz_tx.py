"""Fuzz ``Tx.decode`` (SPEC §2): only ConsensusError for bad bytes; a decoded tx re-encodes
to the same bytes and has a txid."""

from consensus.errors import ConsensusError
from consensus.tx import Tx
from tests.fuzz.samples import TXS

EXPECTED = (ConsensusError,)  # bad-encoding, bad-version, bad-kind
SEEDS = [tx.encode() for tx in TXS]


def target(data: bytes) -> None:
    tx = Tx.decode(data)
    assert tx.encode() == data
    tx.txid()
    tx.tickets()
