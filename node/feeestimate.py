"""Fee estimation for RPC ``estimatefee``: units per byte from the mempool and recent blocks.

Three terms, the largest wins (DESIGN "estimatefee"; the third in DESIGN "Replace-by-fee
and escrow roll-over"):

- **mempool**: the lowest whole feerate (units/byte) at which a new transaction of
  ``tx_size`` bytes would be taken into the next ``target_blocks`` templates, if nothing
  else arrived: pooled transactions are ranked by feerate as ``Mempool.select`` ranks
  them (highest first; a newcomer ties behind equals), and each template holds
  ``max_block_bytes - TEMPLATE_RESERVE`` bytes of transactions (as ``Node.mine_block``
  builds it). A pool that fits gives 0.
- **blocks**: congestion the pool no longer shows (a block just emptied it). Among the
  last ``RECENT_BLOCKS`` main-chain blocks, those whose transactions fill at least
  ``FULL_FRACTION`` of a template are "full"; if at least half of the examined blocks are
  full, the term is ``floor(median of their lowest included feerate) + 1``, else 0.

- **admission**: when the pool is at its size limit, one unit/byte above its cheapest
  entry, since nothing cheaper is even taken in.

Fees are what the sender pays (SPEC §2 rule 5); a REDEEM's fee comes out of its payout,
so callers must still cap it there (SPEC §7).
"""

from __future__ import annotations

import collections
import functools
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.block import Block
from consensus.ticket import Ticket
from consensus.tx import COINBASE, make_redeem

TEMPLATE_RESERVE = 20_000   # bytes a template leaves for header and coinbase (Node.mine_block)
RECENT_BLOCKS = 24          # blocks the "blocks" term looks back
FULL_FRACTION = 0.9         # a block this full of transactions counts as congested
MAX_TARGET_BLOCKS = 1_008   # bitcoind's bound on the confirmation target
_CACHE_SIZE = 256           # per-block statistics kept


@functools.cache
def redeem_sizes() -> tuple[int, int]:
    """``(bytes of a 1-ticket REDEEM, bytes each further ticket adds)`` (SPEC §2, §7).

    Measured on an encoded REDEEM whose fee takes the widest integer encoding, so a fee
    computed from it is never short."""
    ticket = Ticket(1, 0, bytes(32), 2**63, bytes(64))
    one = make_redeem(bytes(32), bytes(32), 2**64 - 1, [ticket])
    two = make_redeem(bytes(32), bytes(32), 2**64 - 1, [ticket, ticket])
    size_one = len(one.encode())
    return size_one, len(two.encode()) - size_one


def mempool_feerate(pool: Iterable[tuple[int, int]], budget_bytes: int, tx_size: int) -> int:
    """The mempool term: ``pool`` is ``(fee, size)`` per pooled transaction (units, bytes);
    ``budget_bytes`` the template space of the target blocks. Whole units per byte."""
    ranked = sorted(pool, key=lambda fs: fs[0] / fs[1], reverse=True)
    used = 0
    for fee, size in ranked:
        if used + size + tx_size > budget_bytes:
            return int(fee // size) + 1  # strictly above the first transaction left out
        used += size
    return 0


def admission_feerate(pool: Iterable[tuple[int, int]]) -> int:
    """The admission term of a full pool: the least whole feerate (units/byte) strictly
    above its cheapest entry (``Mempool._make_room`` evicts that one for a newcomer paying
    more per byte); 0 for an empty pool."""
    rates = [fee / size for fee, size in pool]
    return int(min(rates)) + 1 if rates else 0


@dataclass(frozen=True)
class BlockFees:
    """Transactions of one block: their bytes and lowest feerate (None: only the coinbase)."""

    tx_bytes: int
    min_feerate: float | None


def block_fees(block: Block) -> BlockFees:
    """``BlockFees`` of ``block``, its coinbase left out."""
    sizes = [(tx.fee, len(tx.encode())) for tx in block.txs if tx.kind != COINBASE]
    if not sizes:
        return BlockFees(0, None)
    return BlockFees(sum(s for _, s in sizes), min(f / s for f, s in sizes))


def blocks_feerate(stats: list[BlockFees], template_bytes: int) -> tuple[int, int]:
    """The blocks term and the number of full blocks among ``stats``."""
    full = [s.min_feerate for s in stats
            if s.min_feerate is not None and s.tx_bytes >= FULL_FRACTION * template_bytes]
    if not full or 2 * len(full) < len(stats):
        return 0, len(full)
    return int(statistics.median(full)) + 1, len(full)


class FeeEstimator:
    """Answers ``estimatefee`` for a node; caches per-block statistics by block hash."""

    def __init__(self, max_block_bytes: int) -> None:
        self.template_bytes = max_block_bytes - TEMPLATE_RESERVE
        self._cache: collections.OrderedDict[bytes, BlockFees] = collections.OrderedDict()

    def _stats(self, block_hash: bytes, get_block: Callable[[bytes], Block | None]) -> BlockFees:
        stats = self._cache.get(block_hash)
        if stats is None:
            block = get_block(block_hash)
            stats = BlockFees(0, None) if block is None else block_fees(block)
            self._cache[block_hash] = stats
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return stats

    def estimate(self, target_blocks: int, pool: Iterable[tuple[int, int]], main: list[bytes],
                 get_block: Callable[[bytes], Block | None], *, full_pool: bool = False) -> dict:
        """The ``estimatefee`` result for ``target_blocks`` (1..MAX_TARGET_BLOCKS).

        ``pool``: ``(fee, size)`` of the pooled transactions; ``main``: main-chain block
        hashes by height (genesis left out of the look-back); ``get_block(hash)`` a decoded
        block; ``full_pool``: the pool is at its size limit, so a newcomer must beat its
        cheapest entry (the ``admission`` term, ``admission_feerate``). Keys: ``feerate`` (units/byte), ``redeem_fee`` (units for a 1-ticket
        REDEEM at that rate), ``redeem_size`` and ``ticket_size`` (bytes), ``mempool_feerate``,
        ``blocks_feerate``, ``blocks`` (examined), ``full_blocks``, ``target_blocks``.
        Raises ``ValueError`` for a target out of range.
        """
        if not 1 <= target_blocks <= MAX_TARGET_BLOCKS:
            raise ValueError(f"target_blocks must be in 1..{MAX_TARGET_BLOCKS}")
        redeem_size, ticket_size = redeem_sizes()
        pool = list(pool)
        admission = admission_feerate(pool) if full_pool else 0
        from_pool = mempool_feerate(pool, target_blocks * self.template_bytes, redeem_size)
        recent = main[max(1, len(main) - RECENT_BLOCKS):]
        from_blocks, full = blocks_feerate([self._stats(h, get_block) for h in recent],
                                           self.template_bytes)
        feerate = max(from_pool, from_blocks, admission)
        return {"feerate": feerate, "redeem_fee": feerate * redeem_size,
                "redeem_size": redeem_size, "ticket_size": ticket_size,
                "mempool_feerate": from_pool, "blocks_feerate": from_blocks,
                "admission_feerate": admission,
                "blocks": len(recent), "full_blocks": full, "target_blocks": target_blocks}
