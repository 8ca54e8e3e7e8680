"""Fuzz the genesis JSON of SPEC §12.1 (``--genesis``): only ValueError (the node turns it
into one ``cannot start`` line); an accepted document yields a genesis block."""

import json

from consensus.block import make_genesis
from consensus.genesis import genesis_document, params_from_genesis
from tests.fuzz.samples import KEYS

EXPECTED = (ValueError,)  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
SEEDS = [json.dumps(genesis_document("regtest", 1_700_000_000, [(KEYS[0], 10**12), (KEYS[1], 5)])).encode(),
         b'{"chain": "regtest"}', b"{}"]


def target(data: bytes) -> None:
    params = params_from_genesis(json.loads(data), "regtest")
    make_genesis(params).encode()
