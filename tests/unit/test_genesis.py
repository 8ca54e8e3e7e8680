"""The SPEC §12.1 genesis document: round trip and clear rejections."""

import pytest

from consensus.address import encode_address
from consensus.genesis import genesis_document, params_from_genesis

ADDR = bytes(range(32))


def test_round_trip_with_hex_and_bech32m():
    doc = genesis_document("regtest", 1_700_000_000, [(ADDR, 5)])
    params = params_from_genesis(doc, "regtest")
    assert (params.genesis_time, params.premine) == (1_700_000_000, ((ADDR, 5),))
    doc["premine"][0][0] = encode_address(ADDR)
    assert params_from_genesis(doc, "regtest").premine == ((ADDR, 5),)


@pytest.mark.parametrize("doc, message", [
    ([], "JSON object"),
    ({"chain": "devnet"}, "--chain is 'regtest'"),
    ({"premine": [["zz", 1]]}, "bad genesis entry"),
    ({"premine": [[ADDR.hex(), 0]]}, "amount"),
    ({"genesis_time": "soon"}, "bad genesis entry"),
])
def test_invalid_genesis_documents(doc, message):
    with pytest.raises(ValueError, match=message):
        params_from_genesis(doc, "regtest")
