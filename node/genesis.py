"""Genesis files (SPEC §12.1): ``{"chain": profile, "genesis_time": int, "premine": [[address, amount], ...]}``."""

import json
from pathlib import Path

from consensus.address import decode_address
from consensus.params import ChainParams, get_params


class GenesisError(ValueError):
    """A genesis file that cannot be used; the message says why."""


def load_genesis(path: Path, chain: str) -> ChainParams:
    """Parameters of ``chain`` with the genesis time and premine of ``path``.

    Raises ``GenesisError`` for unreadable JSON, a profile mismatch, or bad entries.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GenesisError(f"cannot read genesis file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise GenesisError(f"{path}: expected a JSON object")
    profile = data.get("chain", chain)
    if profile != chain:
        raise GenesisError(f"{path} is for chain {profile!r}, but --chain is {chain!r}")
    params = get_params(chain)
    try:
        genesis_time = int(data.get("genesis_time", params.genesis_time))
        premine = [(decode_address(addr), int(amount)) for addr, amount in data.get("premine", [])]
        return params.with_genesis(genesis_time, premine)
    except (TypeError, ValueError) as exc:
        raise GenesisError(f"{path}: bad genesis entry: {exc}") from None


def write_genesis(path: Path, chain: str, genesis_time: int, premine: list[tuple[bytes, int]]) -> None:
    """Write a genesis file (devnets, tests)."""
    data = {"chain": chain, "genesis_time": genesis_time,
            "premine": [[addr.hex(), amount] for addr, amount in premine]}
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
