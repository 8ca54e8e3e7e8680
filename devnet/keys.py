"""Deterministic development keys of local devnets (never use them for real money)."""

from consensus import keys
from consensus.hashing import tagged_hash
from consensus.params import COIN

DEV_KEY_NAMES = ("miner", "customer", "cheater", "merchant-a", "merchant-b")
DEV_PREMINE = {"customer": 1_000 * COIN, "cheater": 1_000 * COIN}


def dev_seed(name: str) -> bytes:
    """The 32-byte seed of development key ``name`` (derived from its name)."""
    return tagged_hash(b"microcash-devnet-key", name.encode())


def dev_address(name: str) -> bytes:
    """The public key (address) of development key ``name``."""
    return keys.public_key(dev_seed(name))


def dev_premine() -> list[tuple[bytes, int]]:
    """Genesis outputs funding the development keys."""
    return [(dev_address(name), amount) for name, amount in DEV_PREMINE.items()]
