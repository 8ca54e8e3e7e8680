"""Test chain data: deterministic keys, the regtest genesis file, hand-built blocks.

Used by the functional framework (``framework.py`` re-exports these names) and by tests
that inject blocks through a raw peer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from blake3 import blake3
from nacl.signing import SigningKey

from consensus.block import Block, Header, compute_tx_root, is_pow_valid
from consensus.block import make_genesis as make_genesis_block
from consensus.params import get_params
from consensus.tx import Tx, make_coinbase
from consensus.vdf import compute_vdf

COIN = 10**8  # units per MCASH (SPEC §0)
BLOCK_REWARD = 50 * COIN  # regtest block reward (SPEC §1)
REGTEST_VDF_CHECKPOINTS = 2  # C of the regtest profile (SPEC §1)
REGTEST_TARGET_HEX = format(2**255 - 1, "064x")  # genesis_target of regtest, 64 hex digits
ZERO_HASH_HEX = "00" * 32

GENESIS_TIME = 1_700_000_000  # fixed, so every test chain has a deterministic genesis
PREMINE_KEYS = 5  # keys 0..4 are premined
PREMINE_AMOUNT = 1_000_000 * COIN  # per premined key


class FrameworkError(AssertionError):
    """A framework wait timed out or a node misbehaved at the process level."""


# --------------------------------------------------------------------------- keys


def test_seed(i: int) -> bytes:
    """The 32-byte Ed25519 seed of deterministic test key ``i``: blake3 of a fixed label."""
    return blake3(b"microcash-test-key-%d" % i).digest()


def test_pubkey(i: int) -> bytes:
    """The 32-byte public key (= address) of test key ``i``."""
    return SigningKey(test_seed(i)).verify_key.encode()


def test_address(i: int) -> str:
    """The address of test key ``i`` as 64 hex digits (the RPC's accepted input form)."""
    return test_pubkey(i).hex()


# Keep pytest from collecting the helpers above as tests when a test module imports them.
test_seed.__test__ = False  # type: ignore[attr-defined]
test_pubkey.__test__ = False  # type: ignore[attr-defined]
test_address.__test__ = False  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- genesis


def default_premine() -> list[tuple[str, int]]:
    """``PREMINE_AMOUNT`` units to each of the test keys ``0 .. PREMINE_KEYS-1``."""
    return [(test_address(i), PREMINE_AMOUNT) for i in range(PREMINE_KEYS)]


def make_genesis(
    directory: Path,
    premine: Iterable[tuple[str, int]] | None = None,
    *,
    genesis_time: int = GENESIS_TIME,
    chain: str = "regtest",
    filename: str = "genesis.json",
) -> Path:
    """Write the genesis JSON of SPEC §12.1 into ``directory`` and return its path.

    premine: ``[(address_hex_or_bech32m, amount_units), ...]``; default ``default_premine()``.
    The file is ``{"chain": chain, "genesis_time": int, "premine": [[address, amount]]}``.
    Raises ValueError for a negative amount or a non-integer time.
    """
    entries = default_premine() if premine is None else list(premine)
    if not isinstance(genesis_time, int) or genesis_time < 0:
        raise ValueError(f"genesis_time must be a non-negative int, got {genesis_time!r}")
    for address, amount in entries:
        if not isinstance(amount, int) or amount < 0:
            raise ValueError(f"premine amount for {address} must be a non-negative int")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    document = {
        "chain": chain,
        "genesis_time": genesis_time,
        "premine": [[address, amount] for address, amount in entries],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def compute_genesis_hash(
    premine: Iterable[tuple[str, int]] | None = None, genesis_time: int = GENESIS_TIME
) -> bytes:
    """The regtest genesis hash a node must derive from ``make_genesis``'s file (SPEC §10).

    Computed locally with ``consensus``, so tests can check the node's ``genesis_hash``
    independently. Addresses must be hex here.
    """
    entries = default_premine() if premine is None else list(premine)
    params = get_params("regtest").with_genesis(
        genesis_time, [(bytes.fromhex(a), amount) for a, amount in entries]
    )
    return make_genesis_block(params).hash()


def make_block(
    parent: dict[str, Any],
    txs: Sequence[Tx] = (),
    *,
    miner: bytes | None = None,
    valid_pow: bool = True,
    timestamp: int | None = None,
    coinbase_amount: int | None = None,
) -> Block:
    """Build a regtest block on ``parent`` (a ``getblock`` result) outside any node.

    The coinbase pays ``coinbase_amount`` (default: block reward + the txs' fees) to
    ``miner`` (default test key 9). ``valid_pow=False`` searches for a nonce whose hash
    is *above* the target (SPEC §10 PoW failure). The VDF is computed as SPEC §5 says,
    so with ``valid_pow=True`` and valid txs the result is a valid block.
    """
    params = get_params("regtest")
    height = parent["height"] + 1
    prev_hash = bytes.fromhex(parent["hash"])
    miner = miner or test_pubkey(9)
    if coinbase_amount is None:
        coinbase_amount = params.block_reward + sum(tx.fee for tx in txs)
    all_txs = (make_coinbase(height, [(miner, coinbase_amount)]),) + tuple(txs)
    vdf, checkpoints = compute_vdf(prev_hash, params.vdf_iterations, params.vdf_checkpoints)
    ts = timestamp if timestamp is not None else max(int(time.time()), parent["timestamp"] + 1)
    root = compute_tx_root([tx.txid() for tx in all_txs])
    target = params.genesis_target
    # With target 2^255 - 1 each nonce succeeds (or fails) with probability 1/2.
    for nonce in range(10_000):
        header = Header(1, height, prev_hash, ts, target, nonce, root, vdf, tuple(checkpoints))
        if is_pow_valid(header.hash(), target) == valid_pow:
            return Block(header, all_txs)
    raise FrameworkError("no nonce found in 10 000 tries")
