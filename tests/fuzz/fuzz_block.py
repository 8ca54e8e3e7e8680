"""Fuzz ``Block.decode`` (SPEC §10): only ConsensusError; decoded blocks re-encode exactly."""

from consensus.block import Block
from consensus.errors import ConsensusError
from tests.fuzz.samples import BLOCK, GENESIS

EXPECTED = (ConsensusError,)  # bad-encoding, and bad-version / bad-kind of a tx
SEEDS = [BLOCK.encode(), GENESIS.encode()]


def target(data: bytes) -> None:
    block = Block.decode(data)
    assert block.encode() == data
    block.hash()
    for tx in block.txs:
        tx.txid()
