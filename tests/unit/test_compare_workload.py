"""The comparison's workload rules (devnet/compare_workload.py) and bench/economy sizes."""

import pytest

from consensus.params import get_params
from devnet.compare_workload import WorkloadError, make_workload

PARAMS = get_params("regtest")


def test_draw_len_is_the_smallest_making_winners_whole_and_blocks_round_up() -> None:
    w = make_workload(PARAMS, 4, 24, 1000, 10, 5, 2)  # 24·d multiple of 32 -> d = 4
    assert w.draw_len == 4 and w.blocks == 12 and w.beta == 32_000
    assert [w.per_merchant(j) for j in range(4)] == [6, 6, 6, 6]
    assert sum(make_workload(PARAMS, 3, 32, 1, 1, 5, 1).per_merchant(j) for j in range(3)) == 32


@pytest.mark.parametrize("args", [(0, 32, 1, 1, 5, 1), (4, 2, 1, 1, 5, 1), (1, 32, 0, 1, 5, 1),
                                  (1, 3, 1, 1, 5, 1), (1, 32, 1, 1, 5, 0)])
def test_invalid_workload_is_a_clear_error(args) -> None:
    with pytest.raises(WorkloadError):
        make_workload(PARAMS, *args)


def test_economy_sizes_are_real_encodings() -> None:
    from bench.economy import model, sizes
    sz = sizes()
    assert sz["ticket"] == 107 and sz["ticket_in_redeem"] == 109
    out = model(sz)
    assert out["microcash"]["escrows"] == 1 and out["channels"]["txs"] == 200
    assert out["microcash"]["bytes"] < out["micropay"]["bytes"]
