"""Block templates and the proof-of-work search (SPEC §10).

The nonce search runs in a separate process (``ProcessPoolExecutor``) so the node's trio
loop never waits on it; very easy targets (regtest) are solved in-process first.
"""

import time
from dataclasses import dataclass

from blake3 import blake3

from consensus.block import Block, Header, compute_tx_root
from consensus.encoding import packb
from consensus.tx import Tx, make_coinbase
from node.procpool import RestartingPool

IN_PROCESS_TRIES = 2_000
CHUNK = 200_000
_TAG_PREFIX = bytes([5]) + b"block"  # H(b"block", ...) prefix, SPEC §0


@dataclass(frozen=True)
class Template:
    """A block waiting for its nonce."""

    header: Header        # nonce 0
    txs: tuple[Tx, ...]

    def with_nonce(self, nonce: int) -> Block:
        h = self.header
        return Block(Header(h.version, h.height, h.prev_hash, h.timestamp, h.target, nonce,
                            h.tx_root, h.vdf, h.vdf_checkpoints), self.txs)


def build_template(height: int, prev_hash: bytes, timestamp: int, target: int, vdf: bytes,
                   checkpoints: list[bytes], txs: list[Tx], coinbase_address: bytes,
                   block_reward: int) -> Template:
    """Coinbase (reward + fees to ``coinbase_address``) then ``txs``."""
    fees = sum(tx.fee for tx in txs)
    coinbase = make_coinbase(height, [(coinbase_address, block_reward + fees)])
    all_txs = (coinbase,) + tuple(txs)
    header = Header(1, height, prev_hash, timestamp, target, 0,
                    compute_tx_root([tx.txid() for tx in all_txs]), vdf, tuple(checkpoints))
    return Template(header, all_txs)


def header_parts(header: Header) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` with ``encode() == prefix + packb(nonce) + suffix``."""
    obj = header.to_obj()
    prefix = b"\x99" + b"".join(packb(x) for x in obj[:5])
    suffix = b"".join(packb(x) for x in obj[6:])
    return prefix, suffix


def search_nonce(prefix: bytes, suffix: bytes, target: int, start: int, count: int) -> int | None:
    """First nonce in ``[start, start + count)`` whose block hash is ``<= target``."""
    base = blake3(_TAG_PREFIX + prefix)
    for nonce in range(start, min(start + count, 2**64)):
        h = base.copy()
        h.update(packb(nonce) + suffix)
        if int.from_bytes(h.digest(), "big") <= target:
            return nonce
    return None


class PowWorker:
    """A one-process pool (``RestartingPool``) for nonce searches; ``close()`` ends it."""

    def __init__(self) -> None:
        self._pool = RestartingPool(1)

    def search(self, prefix: bytes, suffix: bytes, target: int, start: int, count: int) -> int | None:
        """Blocking call (run it from a thread): search in the worker process, or in
        this thread if the worker died meanwhile (a new one serves the next search)."""
        return self._pool.run(search_nonce, prefix, suffix, target, start, count)

    def close(self) -> None:
        self._pool.shutdown()


def next_timestamp(median_time_past: int, now: float | None = None) -> int:
    """Now, but strictly after the median time past (SPEC §10 "Time")."""
    return max(int(now if now is not None else time.time()), median_time_past + 1)
