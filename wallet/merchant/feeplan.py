"""REDEEM fees that rise as ``t_expire`` nears (issue 8 point 3; DESIGN "Replace-by-fee and
escrow roll-over").

Livepeer lost winning tickets when gas spiked (go-livepeer #1851): its redeemer paid a
fixed price and gave up. Here a REDEEM's fee is planned per attempt from what the node
says (``estimatefee`` for a target of the blocks left) and from how often the tickets
already missed a block:

- **first attempt**: ``max(floor_fee, feerate × size)``, ``feerate`` estimated for
  ``target = blocks_left`` (the blocks that may still include it, ``t_expire − t``);
- **after a missed block** (still unmined in the pool, evicted, or refused as
  ``mempool-full``): at least double the last fee, at least the last fee plus the
  replacement increment (``INCREMENTAL_FEERATE × size``, what the node's replacement
  rule asks), and at least the deadline floor ``cap / 2^(blocks_left − 1)`` — so the
  last block of the window is offered the whole cap;
- always at most ``cap = payout − 1``: a REDEEM never pays more than it earns (SPEC §7,
  ``fee ≤ payout``), and keeps at least one unit.

Pure functions, no I/O; units are MicroCash units, sizes encoded bytes.
"""

from __future__ import annotations

INCREMENTAL_FEERATE = 1  # units/byte a replacement adds (node.replacement.INCREMENTAL_FEERATE)


def fee_cap(payout: int) -> int:
    """The most a REDEEM paying ``payout`` units (before its fee) may offer: ``payout − 1``
    (0 for a payout of at most 1)."""
    return max(0, payout - 1)


def deadline_floor(cap: int, blocks_left: int) -> int:
    """``cap / 2^(blocks_left − 1)`` (whole units): the cap at the last block, half of it one
    block earlier, and so on; 0 once the window is more than 62 blocks away."""
    if blocks_left < 1:
        return cap
    return cap >> (blocks_left - 1) if blocks_left <= 63 else 0


def plan_redeem_fee(*, feerate: int, size: int, payout: int, blocks_left: int,
                    previous_fee: int | None = None, floor_fee: int = 0) -> int:
    """The fee (units) of the next REDEEM attempt (module docstring).

    ``feerate``: the node's estimate (units/byte) for ``target = blocks_left``; ``size``:
    the REDEEM's encoded bytes; ``payout``: what its tickets pay before the fee;
    ``blocks_left``: ``t_expire − t`` (≥ 1 while a block may include it);
    ``previous_fee``: the last attempt's fee if the tickets missed a block since, else
    None; ``floor_fee``: the merchant's own minimum (``merchant serve --fee``).
    Raises ``ValueError`` for a negative input.
    """
    if min(feerate, size, payout, floor_fee) < 0 or (previous_fee or 0) < 0:
        raise ValueError("fee plan inputs must be >= 0")
    cap = fee_cap(payout)
    fee = max(floor_fee, feerate * size)
    if previous_fee is not None:
        fee = max(fee, 2 * previous_fee, previous_fee + INCREMENTAL_FEERATE * size,
                  deadline_floor(cap, blocks_left))
    return min(fee, cap)
