"""ESCROW_CREATE validity, escrow state and schedule (SPEC §3, paper §4.1, eqs. (1), (2))."""

from fractions import Fraction
from math import comb

import pytest

from consensus.escrow import (EscrowState, compute_escrow_amount, compute_escrow_id,
                              compute_group_of_seqno, compute_lifetime, compute_min_penalty,
                              compute_round_of_seqno, compute_seqno_range, compute_start,
                              compute_t_draw, compute_t_expire, compute_t_refund,
                              is_penalty_sufficient, verify_escrow_params)
from consensus.hashing import tagged_hash
from consensus.state import compute_money_total, get_issued, get_refunds_at
from consensus.tx import make_escrow_create
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, CAROL, DAVE, EVE, EVE_SEED,
                                     MINER, PREMINE_EACH, Chain, assert_rejects,
                                     regtest_params)

P = regtest_params()
MERCHANTS = [BOB, CAROL]


def _exact_b(params, m, p, beta, tkt_rate, draw_len) -> Fraction:
    """Equation (2) written literally, with the full binomial."""
    a = tkt_rate * draw_len
    k = p * a
    rho = comb(a, int(k))
    first = 0 if k == a else (1 - p) / (1 - Fraction(1, rho))
    return ((m - 1) * p * beta * tkt_rate * draw_len
            * (first + draw_len * ((1 - p) * (params.d_draw - 1) + params.d_redeem)))


def _params_check(escrow_amount=8, penalty=17, win_num=1, win_den=2, beta=2, tkt_rate=2,
                  draw_len=1, merchants=MERCHANTS, params=P):
    return verify_escrow_params(params, escrow_amount, penalty, win_num, win_den, beta,
                                tkt_rate, draw_len, list(merchants))


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


def _create(chain, **body):
    """An ESCROW_CREATE from ALICE with the defaults of ``_params_check`` overridden."""
    fields = dict(escrow_amount=8, penalty=17, win_num=1, win_den=2, beta=2, tkt_rate=2,
                  draw_len=1, merchants=MERCHANTS, fee=0)
    fields.update(body)
    return make_escrow_create(ALICE_SEED, chain.genesis_hash, chain.nonce(ALICE),
                              fields["fee"], fields["escrow_amount"], fields["penalty"],
                              fields["win_num"], fields["win_den"], fields["beta"],
                              fields["tkt_rate"], fields["draw_len"], list(fields["merchants"]))


# ---- a valid escrow ------------------------------------------------------------------

def test_escrow_create_builds_state_and_schedule(chain):
    tx = _create(chain, fee=3)
    block = chain.mine([tx])
    h = block.header.height
    eid = compute_escrow_id(block.hash(), tx.txid())
    assert eid == tagged_hash(b"escrow", block.hash() + tx.txid())
    e = chain.escrow(eid)
    assert e == EscrowState(owner=ALICE, escrow_balance=8, penalty_balance=17, win_num=1,
                            win_den=2, beta=2, tkt_rate=2, draw_len=1, l_esc=4,
                            merchants=(BOB, CAROL), created_height=h, start=h + 3,
                            t_refund=h + 3 + 4 - 1 + 3 + 6, broken=False)
    assert (e.N, e.draw_size, e.winners_per_draw, e.groups) == (8, 2, 1, 4)
    assert chain.balance(ALICE) == PREMINE_EACH - 8 - 17 - 3
    assert chain.nonce(ALICE) == 1
    assert get_refunds_at(chain.state, e.t_refund) == [eid]
    assert compute_money_total(chain.state) == get_issued(chain.state)
    assert chain.balance(MINER) == 2 * chain.params.block_reward + 3


def test_escrow_id_is_chosen_by_the_including_block(chain):
    tx = _create(chain)
    b1 = chain.build_block([tx])
    b2 = chain.build_block([tx], timestamp=b1.header.timestamp + 1)
    assert b1.hash() != b2.hash()
    assert compute_escrow_id(b1.hash(), tx.txid()) != compute_escrow_id(b2.hash(), tx.txid())


def test_lifetime_equation_1():
    assert compute_lifetime(8, 1, 2, 2, 2) == 4
    assert compute_lifetime(9, 1, 2, 2, 2) == Fraction(9, 2)
    assert compute_escrow_amount(1, 300, 300, 1000, 3) == 3000
    with pytest.raises(ValueError):
        compute_escrow_amount(1, 3, 1, 1, 1)
    assert _params_check() == 4


# ---- bad-escrow-params -----------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    dict(win_num=0),
    dict(win_num=3, win_den=2),
    dict(win_num=2**32, win_den=2**32),
    dict(win_num=1, win_den=2**32),
    dict(beta=0),
    dict(tkt_rate=0),
    dict(draw_len=0),
    dict(draw_len=9),
], ids=["win_num_zero", "p_above_one", "win_den_2_32", "win_den_2_32_small_p", "beta_zero",
        "tkt_rate_zero", "draw_len_zero", "draw_len_above_max"])
def test_invalid_bad_escrow_params(chain, fields):
    assert_rejects("bad-escrow-params", _params_check, **fields)
    assert_rejects("bad-escrow-params", chain.check_tx, _create(chain, **fields))


def test_invalid_bad_escrow_params_boundaries_accepted():
    assert _params_check(win_num=2**32 - 1, win_den=2**32 - 1, escrow_amount=8, penalty=10**9,
                         tkt_rate=2, beta=1) == 4
    # draw_len = draw_len_max is allowed (a = 16, k = 8, l_esc = 8)
    assert _params_check(draw_len=8, escrow_amount=16, penalty=10**9) == 8


def test_invalid_bad_escrow_params_checked_first():
    assert_rejects("bad-escrow-params", _params_check, beta=0, merchants=[])


# ---- bad-merchants ---------------------------------------------------------------------

def test_invalid_bad_merchants_zero(chain):
    assert_rejects("bad-merchants", _params_check, merchants=[])
    assert_rejects("bad-merchants", chain.check_tx, _create(chain, merchants=[]))


def test_invalid_bad_merchants_too_many(chain):
    many = [i.to_bytes(32, "big") for i in range(1, P.max_merchants + 2)]
    assert_rejects("bad-merchants", _params_check, merchants=many, penalty=10**15)
    assert_rejects("bad-merchants", chain.check_tx,
                   _create(chain, merchants=many, penalty=10**11))
    assert _params_check(merchants=many[:P.max_merchants], penalty=10**15) == 4


def test_invalid_bad_merchants_duplicate(chain):
    assert_rejects("bad-merchants", _params_check, merchants=[BOB, CAROL, BOB])
    assert_rejects("bad-merchants", chain.check_tx, _create(chain, merchants=[BOB, BOB]))


def test_invalid_bad_merchants_before_bad_winners():
    assert_rejects("bad-merchants", _params_check, merchants=[], win_num=1, win_den=3)


# ---- bad-winners -----------------------------------------------------------------------

def test_invalid_bad_winners_k_not_integer(chain):
    # p = 1/3, a = 2: k = 2/3
    assert_rejects("bad-winners", _params_check, win_num=1, win_den=3)
    # p = 2/3, a = 4: k = 8/3
    assert_rejects("bad-winners", _params_check, win_num=2, win_den=3, tkt_rate=4)
    assert_rejects("bad-winners", chain.check_tx, _create(chain, win_num=1, win_den=3))


def test_invalid_bad_winners_k_zero():
    # k = p * a with p > 0 is never exactly 0; the smallest k rejected is below 1
    assert_rejects("bad-winners", _params_check, win_num=1, win_den=300, tkt_rate=1,
                   draw_len=3)
    assert_rejects("bad-winners", _params_check, win_num=1, win_den=2**32 - 1)


def test_invalid_bad_winners_draw_size_above_max(chain):
    a = P.max_draw_size + 1
    assert_rejects("bad-winners", _params_check, tkt_rate=a, win_num=1, win_den=a,
                   escrow_amount=2, beta=2)
    assert_rejects("bad-winners", _params_check, tkt_rate=a // 2 + 1, draw_len=2,
                   win_num=1, win_den=a + 1, escrow_amount=4, beta=2)
    assert_rejects("bad-winners", chain.check_tx,
                   _create(chain, tkt_rate=a, win_num=1, win_den=a, escrow_amount=2))
    # a == max_draw_size passes the winners rule
    a = P.max_draw_size
    assert _params_check(tkt_rate=a, win_num=1, win_den=a, escrow_amount=2, beta=2,
                         merchants=[BOB], penalty=1) == 1


def test_invalid_bad_winners_k_above_max(chain):
    k = P.max_winners + 1
    assert_rejects("bad-winners", _params_check, tkt_rate=k, win_num=1, win_den=1,
                   escrow_amount=k, beta=1, merchants=[BOB], penalty=1)
    assert_rejects("bad-winners", chain.check_tx,
                   _create(chain, tkt_rate=k, win_num=1, win_den=1, escrow_amount=k, beta=1,
                           merchants=[BOB], penalty=1))
    k = P.max_winners
    assert _params_check(tkt_rate=k, win_num=1, win_den=1, escrow_amount=k, beta=1,
                         merchants=[BOB], penalty=1) == 1


# ---- bad-lifetime ----------------------------------------------------------------------

def test_invalid_bad_lifetime_not_integer(chain):
    assert_rejects("bad-lifetime", _params_check, escrow_amount=9)  # l_esc = 9/2
    assert_rejects("bad-lifetime", _params_check, escrow_amount=1)  # l_esc = 1/2
    assert_rejects("bad-lifetime", chain.check_tx, _create(chain, escrow_amount=9))


def test_invalid_bad_lifetime_not_multiple_of_draw_len(chain):
    # draw_len 2: beta * p * tkt_rate = 2 per round, l_esc = 3
    assert_rejects("bad-lifetime", _params_check, draw_len=2, escrow_amount=6)
    assert_rejects("bad-lifetime", chain.check_tx, _create(chain, draw_len=2, escrow_amount=6))
    assert _params_check(draw_len=2, escrow_amount=8, penalty=10**6) == 4


def test_invalid_bad_lifetime_below_draw_len(chain):
    assert_rejects("bad-lifetime", _params_check, escrow_amount=0)
    assert_rejects("bad-lifetime", _params_check, escrow_amount=0, draw_len=3)
    assert_rejects("bad-lifetime", chain.check_tx, _create(chain, escrow_amount=0))


def test_invalid_bad_lifetime_above_max_escrow_rounds(chain):
    rounds = P.max_escrow_rounds
    assert_rejects("bad-lifetime", _params_check, escrow_amount=2 * (rounds + 1))
    assert_rejects("bad-lifetime", chain.check_tx, _create(chain, escrow_amount=2 * (rounds + 1)))
    assert _params_check(escrow_amount=2 * rounds) == rounds


# ---- penalty-too-low ---------------------------------------------------------------------

def test_invalid_penalty_too_low_floor_b_rejected_floor_b_plus_one_accepted(chain):
    # Appendix A second example (regtest has d_draw 3, d_redeem 6): B = 16 exactly
    assert _exact_b(P, 2, Fraction(1, 2), 2, 2, 1) == 16
    assert compute_min_penalty(P, 2, 1, 2, 2, 2, 1) == 17
    assert_rejects("penalty-too-low", _params_check, penalty=16)
    assert_rejects("penalty-too-low", chain.check_tx, _create(chain, penalty=16))
    assert _params_check(penalty=17) == 4
    chain.check_tx(_create(chain, penalty=17))


def test_invalid_penalty_too_low_fractional_b(chain):
    # m = 3, p = 1/2, beta 2, tkt_rate 2, draw_len 2: a = 4, k = 2, rho = 6
    b = _exact_b(P, 3, Fraction(1, 2), 2, 2, 2)
    assert b.denominator != 1
    floor_b = b.numerator // b.denominator
    assert compute_min_penalty(P, 3, 1, 2, 2, 2, 2) == floor_b + 1
    merchants = [BOB, CAROL, DAVE]
    assert_rejects("penalty-too-low", _params_check, penalty=floor_b, draw_len=2,
                   escrow_amount=8, merchants=merchants)
    assert _params_check(penalty=floor_b + 1, draw_len=2, escrow_amount=8,
                         merchants=merchants) == 4
    assert_rejects("penalty-too-low", chain.check_tx,
                   _create(chain, penalty=floor_b, draw_len=2, escrow_amount=8,
                           merchants=merchants))


def test_invalid_penalty_too_low_single_merchant_zero(chain):
    assert compute_min_penalty(P, 1, 1, 2, 2, 2, 1) == 1
    assert_rejects("penalty-too-low", _params_check, penalty=0, merchants=[BOB])
    assert_rejects("penalty-too-low", chain.check_tx, _create(chain, penalty=0, merchants=[BOB]))
    assert _params_check(penalty=1, merchants=[BOB]) == 4


def test_invalid_penalty_too_low_p_one():
    # k = a: the first term of eq. (2) is 0; B = (m-1) * beta * a * draw_len * d_redeem
    b = _exact_b(P, 2, Fraction(1), 1, 1, 1)
    assert b == 6
    assert compute_min_penalty(P, 2, 1, 1, 1, 1, 1) == 7
    assert_rejects("penalty-too-low", _params_check, win_num=1, win_den=1, beta=1, tkt_rate=1,
                   escrow_amount=1, penalty=6)
    assert _params_check(win_num=1, win_den=1, beta=1, tkt_rate=1, escrow_amount=1,
                         penalty=7) == 1


@pytest.mark.parametrize("m,num,den,beta,rate,dlen", [
    (2, 1, 2, 2, 2, 1), (3, 1, 2, 2, 2, 2), (2, 1, 4, 3, 4, 1), (5, 1, 3, 7, 3, 2),
    (2, 3, 4, 1, 4, 2), (4, 1, 8, 5, 8, 3), (2, 1, 1, 9, 3, 2), (7, 2, 5, 10, 5, 4),
    (2, 1, 50, 50, 50, 8), (256, 1, 10, 10**6, 10, 1),
])
def test_min_penalty_matches_literal_equation_2(m, num, den, beta, rate, dlen):
    b = _exact_b(P, m, Fraction(num, den), beta, rate, dlen)
    least = b.numerator // b.denominator + 1
    assert compute_min_penalty(P, m, num, den, beta, rate, dlen) == least
    assert is_penalty_sufficient(P, least, m, num, den, beta, rate, dlen)
    assert not is_penalty_sufficient(P, least - 1, m, num, den, beta, rate, dlen)


# ---- check order and funds -------------------------------------------------------------

def test_invalid_penalty_too_low_before_insufficient_funds(chain):
    tx = make_escrow_create(EVE_SEED, chain.genesis_hash, 0, 0, 8, 16, 1, 2, 2, 2, 1,
                            MERCHANTS)
    assert_rejects("penalty-too-low", chain.check_tx, tx)
    tx = make_escrow_create(EVE_SEED, chain.genesis_hash, 0, 1, 8, 16, 1, 2, 2, 2, 1,
                            MERCHANTS)
    assert_rejects("insufficient-funds", chain.check_tx, tx)  # the fee is rule 5 of §2
    assert chain.balance(EVE) == 0


# ---- schedule (SPEC §3.2) --------------------------------------------------------------

def test_schedule_regtest():
    e = EscrowState(ALICE, 24, 1, 1, 2, 2, 3, 2, 4, (BOB,), created_height=10,
                    start=compute_start(P, 10), t_refund=compute_t_refund(P, 13, 4, 2),
                    broken=False)
    assert e.start == 13 == 10 + P.confirm_depth + 1
    assert [compute_seqno_range(e, r) for r in range(12, 18)] == [
        (0, 0), (0, 3), (3, 6), (6, 9), (9, 12), (0, 0)]
    assert [compute_round_of_seqno(e, s) for s in (0, 2, 3, 11)] == [13, 13, 14, 16]
    assert [compute_group_of_seqno(e, s) for s in (0, 5, 6, 11)] == [0, 0, 1, 1]
    # group 0 = rounds 13, 14; t_draw = 13 + 2 - 1 + 3 = 17; t_expire = 23
    assert compute_t_draw(P, e, 0) == 17
    assert compute_t_expire(P, e, 0) == 23
    assert compute_t_draw(P, e, 1) == 19
    assert compute_t_expire(P, e, 1) == 25
    assert e.t_refund == compute_t_expire(P, e, e.groups - 1) == 25


def test_state_encoding_field_order():
    e = EscrowState(ALICE, 1, 2, 3, 4, 5, 6, 7, 8, (BOB, EVE), 9, 10, 11, True)
    assert e.to_obj() == [ALICE, 1, 2, 3, 4, 5, 6, 7, 8, [BOB, EVE], 9, 10, 11, True]


def test_escrow_json_has_bech32m_addresses_and_parses_back():
    """SPEC §12: getescrow / listescrows show addresses as bech32m; hex still parses."""
    from consensus.address import encode_address
    from consensus.escrow import EscrowState
    state = EscrowState(bytes([1]) * 32, 10, 20, 1, 2, 3, 4, 1, 5, (bytes([2]) * 32,), 7, 10,
                        30, False)
    shown = state.to_json()
    assert shown["owner"] == encode_address(bytes([1]) * 32) and shown["owner"].startswith("mc1")
    assert shown["merchants"] == [encode_address(bytes([2]) * 32)]
    assert EscrowState.from_rpc(shown) == state
    legacy = {**shown, "owner": state.owner.hex(), "merchants": [state.merchants[0].hex()]}
    assert EscrowState.from_rpc(legacy) == state
