"""The genesis document of SPEC §12.1, as pure data: ``{"chain", "genesis_time", "premine"}``.

Reading and writing the file is the caller's business (node start-up, devnet set-up).
"""

from typing import Any

from consensus.address import decode_address
from consensus.params import ChainParams, get_params


def genesis_document(chain: str, genesis_time: int, premine: list[tuple[bytes, int]]) -> dict:
    """The JSON-ready document for ``chain`` with addresses as hex, amounts in units."""
    return {"chain": chain, "genesis_time": int(genesis_time),
            "premine": [[addr.hex(), int(amount)] for addr, amount in premine]}


def params_from_genesis(document: Any, chain: str) -> ChainParams:
    """Parameters of profile ``chain`` with the document's genesis time and premine.

    Addresses may be hex or bech32m. Raises ``ValueError`` with a readable message for a
    non-object, a profile other than ``chain``, or bad entries.
    """
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    profile = document.get("chain", chain)
    if profile != chain:
        raise ValueError(f"it is for chain {profile!r}, but --chain is {chain!r}")
    params = get_params(chain)
    try:
        genesis_time = int(document.get("genesis_time", params.genesis_time))
        premine = [(decode_address(addr), int(amount))
                   for addr, amount in document.get("premine", [])]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad genesis entry: {exc}") from None
    return params.with_genesis(genesis_time, premine)
