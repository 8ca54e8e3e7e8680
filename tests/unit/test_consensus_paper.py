"""SPEC Appendix A: the paper's worked examples hold under the ``paper`` profile."""

from dataclasses import replace
from fractions import Fraction
from math import comb

import pytest

from consensus.escrow import (EscrowState, compute_escrow_amount, compute_min_penalty,
                              compute_seqno_range, compute_start, compute_t_draw,
                              compute_t_expire, compute_t_refund, is_penalty_sufficient,
                              verify_escrow_params)
from consensus.lottery import compute_winners
from consensus.params import PAPER
from consensus.state import MemoryState, put_block_vdf
from consensus.transition import compute_draw, get_draw_value
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, Chain,
                                     assert_rejects, regtest_params)

EID = b"\x3c" * 32
# Fig. 3 escrow: p = 1/300, beta 300, tkt_rate 1000, draw_len 3, l_esc 3 (one group)
P_NUM, P_DEN, BETA, RATE, DRAW_LEN, L_ESC = 1, 300, 300, 1000, 3, 3


def _paper_escrow(created_height: int) -> EscrowState:
    start = compute_start(PAPER, created_height)
    return EscrowState(ALICE, compute_escrow_amount(P_NUM, P_DEN, BETA, RATE, L_ESC), 263_721,
                       P_NUM, P_DEN, BETA, RATE, DRAW_LEN, L_ESC, (BOB, CAROL), created_height,
                       start, compute_t_refund(PAPER, start, L_ESC, DRAW_LEN), False)


def test_profile_values():
    assert (PAPER.confirm_depth, PAPER.d_draw, PAPER.d_redeem) == (6, 10, 20)
    assert (PAPER.vdf_iterations, PAPER.vdf_checkpoints) == (2_000_000, 16)
    assert PAPER.genesis_target == 2**232 - 1 and PAPER.pow_limit == 2**240 - 1


# ---- Fig. 2 ------------------------------------------------------------------------------

def test_fig2_issuing_schedule():
    e = _paper_escrow(created_height=10)
    assert e.start == 17
    assert compute_seqno_range(e, 17) == (0, 1000)
    assert compute_seqno_range(e, 18) == (1000, 2000)
    assert compute_seqno_range(e, 19) == (2000, 3000)
    assert compute_seqno_range(e, 16) == (0, 0)
    assert compute_seqno_range(e, 20) == (0, 0)
    assert e.N == 3000


# ---- Fig. 3 ------------------------------------------------------------------------------

def test_fig3_draw_schedule():
    e = _paper_escrow(created_height=21)
    assert e.start == 28
    assert e.groups == 1 and e.draw_size == 3000 and e.winners_per_draw == 10
    assert compute_t_draw(PAPER, e, 0) == 40
    assert compute_t_expire(PAPER, e, 0) == 60
    assert e.t_refund == 60


def test_fig3_escrow_is_valid_with_least_penalty():
    amount = compute_escrow_amount(P_NUM, P_DEN, BETA, RATE, L_ESC)
    assert amount == 3000
    assert verify_escrow_params(PAPER, amount, 263_721, P_NUM, P_DEN, BETA, RATE, DRAW_LEN,
                                [BOB, CAROL]) == 3
    assert_rejects("penalty-too-low", verify_escrow_params, PAPER, amount, 263_720, P_NUM,
                   P_DEN, BETA, RATE, DRAW_LEN, [BOB, CAROL])


def test_fig3_draw_uses_vdf_field_of_block_41():
    e = _paper_escrow(created_height=21)
    state = MemoryState()
    v40, v41, v42 = b"\x40" * 32, b"\x41" * 32, b"\x42" * 32
    put_block_vdf(state, 40, v40)
    assert get_draw_value(state, PAPER, e, 0) is None
    assert compute_draw(state, PAPER, EID, e, 0) is None  # not drawn before block 41
    put_block_vdf(state, 41, v41)
    put_block_vdf(state, 42, v42)
    assert get_draw_value(state, PAPER, e, 0) == v41
    winners = compute_draw(state, PAPER, EID, e, 0)
    assert winners == frozenset(compute_winners(v41, EID, 0, 3000, 10))


@pytest.mark.parametrize("v", [bytes(32), b"\x41" * 32, bytes(range(32))])
def test_fig3_exactly_ten_distinct_winners(v):
    winners = compute_winners(v, EID, 0, 3000, 10)
    assert len(winners) == 10
    assert len(set(winners)) == 10
    assert all(0 <= s <= 2999 for s in winners)


def test_fig3_on_a_chain_with_paper_schedule():
    """The paper's schedule on a connected chain: paper confirm_depth, d_draw and d_redeem,
    but an easy target and a short VDF so that 41 blocks take milliseconds."""
    params = replace(regtest_params(), confirm_depth=PAPER.confirm_depth,
                     d_draw=PAPER.d_draw, d_redeem=PAPER.d_redeem)
    chain = Chain(params)
    chain.mine_to(20)
    eid = chain.create_escrow(ALICE_SEED, [BOB, CAROL], win_num=P_NUM, win_den=P_DEN,
                              beta=BETA, tkt_rate=RATE, draw_len=DRAW_LEN, l_esc=L_ESC)
    e = chain.escrow(eid)
    assert (e.created_height, e.start, e.penalty_balance) == (21, 28, 263_721)
    assert chain.t_draw(eid, 0) == 40
    chain.mine_to(41)
    winners = chain.winners(eid, 0)
    assert len(winners) == 10 and all(0 <= s < 3000 for s in winners)
    assert winners == sorted(compute_winners(chain.blocks[41].header.vdf, eid, 0, 3000, 10))
    before = chain.balance(BOB)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s) for s in winners[:3]])])
    assert chain.balance(BOB) == before + 3 * BETA


# ---- equation (2) ------------------------------------------------------------------------

def _literal_b(params, m, p, beta, rate, dlen):
    a = rate * dlen
    k = int(p * a)
    rho = comb(a, k)
    first = 0 if k == a else (1 - p) / (1 - Fraction(1, rho))
    return ((m - 1) * p * beta * rate * dlen
            * (first + dlen * ((1 - p) * (params.d_draw - 1) + params.d_redeem)))


def test_equation2_first_example():
    b = _literal_b(PAPER, 2, Fraction(1, 300), 300, 1000, 3)
    assert b == 263_720 + Fraction(2_990, comb(3000, 10) - 1)
    assert b.numerator // b.denominator == 263_720
    assert compute_min_penalty(PAPER, 2, 1, 300, 300, 1000, 3) == 263_721
    assert is_penalty_sufficient(PAPER, 263_721, 2, 1, 300, 300, 1000, 3)
    assert not is_penalty_sufficient(PAPER, 263_720, 2, 1, 300, 300, 1000, 3)


def test_equation2_second_example():
    params = replace(PAPER, d_draw=3, d_redeem=6)
    assert comb(2, 1) == 2  # rho
    assert _literal_b(params, 2, Fraction(1, 2), 2, 2, 1) == 16
    assert compute_min_penalty(params, 2, 1, 2, 2, 2, 1) == 17
    assert not is_penalty_sufficient(params, 16, 2, 1, 2, 2, 2, 1)
    assert is_penalty_sufficient(params, 17, 2, 1, 2, 2, 2, 1)


def test_equation2_single_merchant():
    assert _literal_b(PAPER, 1, Fraction(1, 300), 300, 1000, 3) == 0
    assert compute_min_penalty(PAPER, 1, 1, 300, 300, 1000, 3) == 1
    assert not is_penalty_sufficient(PAPER, 0, 1, 1, 300, 300, 1000, 3)
    assert is_penalty_sufficient(PAPER, 1, 1, 1, 300, 300, 1000, 3)


def test_equation2_huge_binomial_is_exact_and_fast():
    # a = 2^24, k = 2^15: C(a, k) has ~100 000 digits; the answer must still be exact
    a, k = 2**24, 2**15
    least = compute_min_penalty(PAPER, 3, 1, 2**9, 1, 2**24, 1)
    p = Fraction(1, 2**9)
    f = 2 * p * 1 * a
    a_term = f * ((1 - p) + ((1 - p) * 9 + 20))
    assert least == a_term.numerator // a_term.denominator + 1
    assert k == p * a
