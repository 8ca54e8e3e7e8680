"""The three parameter profiles match the table of SPEC §1."""

import pytest

from consensus.params import COIN, DEVNET, PAPER, REGTEST, get_params

TABLE = {  # field: (devnet, paper, regtest)
    "chain_id": ("microcash-devnet", "microcash-paper", "microcash-regtest"),
    "block_time": (2, 60, 1),
    "retarget_interval": (10, 60, 0),
    "pow_limit": (2**248 - 1, 2**240 - 1, 2**255 - 1),
    "genesis_target": (2**240 - 1, 2**232 - 1, 2**255 - 1),
    "block_reward": (50 * 10**8,) * 3,
    "vdf_iterations": (20_000, 2_000_000, 1_000),
    "vdf_checkpoints": (4, 16, 2),
    "confirm_depth": (2, 6, 2),
    "d_draw": (3, 10, 3),
    "d_redeem": (6, 20, 6),
    "draw_len_max": (8,) * 3,
    "max_future_time": (7200,) * 3,
    "max_block_bytes": (1_000_000,) * 3,
    "max_merchants": (256,) * 3,
    "max_escrow_rounds": (100_000,) * 3,
    "max_draw_size": (2**24,) * 3,
    "max_winners": (2**16,) * 3,
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_profile_table(name):
    assert tuple(getattr(p, name) for p in (DEVNET, PAPER, REGTEST)) == TABLE[name]


def test_profile_invariants():
    assert COIN == 10**8
    for p in (DEVNET, PAPER, REGTEST):
        assert p.vdf_iterations % p.vdf_checkpoints == 0
        assert p.d_draw >= 2 and p.d_redeem >= 2
        assert p.genesis_target <= p.pow_limit
        assert get_params(p.name) is p
    with pytest.raises(ValueError):
        get_params("mainnet")


def test_with_genesis_validates_premine():
    p = REGTEST.with_genesis(5, [(b"\x01" * 32, 7)])
    assert (p.genesis_time, p.premine) == (5, ((b"\x01" * 32, 7),))
    for bad in ([(b"\x01" * 31, 7)], [(b"\x01" * 32, 0)], [(b"\x01" * 32, 2**63)]):
        with pytest.raises(ValueError):
            REGTEST.with_genesis(5, bad)


def test_with_genesis_rejects_premine_total_above_amount_range():
    """SPEC §0 bounds every amount below 2^63, so must the premine's total (else the
    issued total and a doubly-listed account could not be read back)."""
    with pytest.raises(ValueError, match="2\\^63"):
        REGTEST.with_genesis(5, [(b"\x01" * 32, 2**62), (b"\x02" * 32, 2**62)])
