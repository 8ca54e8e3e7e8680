"""The REDEEM fee plan (wallet.merchant.feeplan; issue 8 point 3)."""

import pytest

from wallet.merchant.feeplan import deadline_floor, fee_cap, plan_redeem_fee


def test_first_attempt_follows_the_estimate_within_the_cap():
    assert plan_redeem_fee(feerate=5, size=200, payout=10**6, blocks_left=6) == 1000
    assert plan_redeem_fee(feerate=0, size=200, payout=10**6, blocks_left=6, floor_fee=7) == 7
    assert plan_redeem_fee(feerate=10**6, size=200, payout=10**6, blocks_left=6) == 10**6 - 1
    assert plan_redeem_fee(feerate=5, size=200, payout=0, blocks_left=6) == 0


def test_missed_blocks_double_and_reach_the_cap_at_the_deadline():
    cap = fee_cap(10**6)
    fees, previous = [], None
    for left in (6, 5, 4, 3, 2, 1):
        previous = plan_redeem_fee(feerate=0, size=200, payout=10**6, blocks_left=left,
                                   previous_fee=previous)
        fees.append(previous)
    assert fees[0] == 0 and fees[-1] == cap
    assert all(b >= 2 * a and b >= a + 200 or b == cap for a, b in zip(fees, fees[1:]))
    assert deadline_floor(cap, 1) == cap and deadline_floor(cap, 2) == cap // 2
    assert deadline_floor(cap, 100) == 0


def test_bad_inputs():
    with pytest.raises(ValueError):
        plan_redeem_fee(feerate=-1, size=200, payout=10, blocks_left=1)
