"""Properties of the lottery draw (SPEC §6) and of the escrow arithmetic (SPEC §3.1)."""

from fractions import Fraction
from math import comb

from blake3 import blake3
from hypothesis import event, given, settings
from hypothesis import strategies as st

from consensus.errors import ConsensusError
from consensus.escrow import (compute_escrow_amount, compute_min_penalty,
                              is_penalty_sufficient, verify_escrow_params)
from consensus.lottery import compute_winners, winner_set
from tests.consensus_helpers import regtest_params

SETTINGS = settings(max_examples=50, deadline=None)
P = regtest_params()
h32 = st.binary(min_size=32, max_size=32)


def _spec_draw(v: bytes, escrow_id: bytes, g: int, a: int, k: int) -> list[int]:
    """SPEC §6 pseudo-code, transcribed independently."""
    lo, bound = g * a, 2**64 - (2**64 % a)
    h = blake3(bytes([4]) + b"draw" + v + escrow_id).digest()
    winners = []
    while len(winners) != k:
        x = int.from_bytes(h[0:8], "big")
        if x < bound:
            s = lo + x % a
            if s not in winners:
                winners.append(s)
        h = blake3(h).digest()
    return winners


@st.composite
def draws(draw):
    a = draw(st.one_of(st.integers(1, 40), st.integers(1, 3000), st.sampled_from([2**24, 3])))
    k = draw(st.integers(1, min(a, 40)) | st.integers(1, min(a, 1500)))
    return draw(h32), draw(h32), draw(st.integers(0, 10**6)), a, k


@SETTINGS
@given(draws())
def test_exactly_k_distinct_winners_in_group_range(args):
    v, escrow_id, g, a, k = args
    winners = compute_winners(v, escrow_id, g, a, k)
    assert len(winners) == k
    assert len(set(winners)) == k
    assert all(g * a <= s < (g + 1) * a for s in winners)
    assert winners == _spec_draw(v, escrow_id, g, a, k)
    assert winner_set(v, escrow_id, g, a, k) == frozenset(winners)


@SETTINGS
@given(h32, h32, st.integers(1, 60))
def test_k_equals_a_draws_the_whole_group(v, escrow_id, a):
    assert sorted(compute_winners(v, escrow_id, 2, a, a)) == list(range(2 * a, 3 * a))


@SETTINGS
@given(h32, h32, st.integers(1, 500), st.integers(0, 50))
def test_group_only_shifts_winners(v, escrow_id, a, g):
    k = min(a, 5)
    base = compute_winners(v, escrow_id, 0, a, k)
    assert compute_winners(v, escrow_id, g, a, k) == [g * a + s for s in base]


# ---- escrow arithmetic --------------------------------------------------------------------

def _literal_b(m, p, beta, rate, dlen) -> Fraction:
    a = rate * dlen
    k = int(p * a)
    rho = comb(a, k)
    first = 0 if k == a else (1 - p) / (1 - Fraction(1, rho))
    return ((m - 1) * p * beta * rate * dlen
            * (first + dlen * ((1 - p) * (P.d_draw - 1) + P.d_redeem)))


@st.composite
def escrow_shapes(draw):
    rate = draw(st.integers(1, 40))
    dlen = draw(st.integers(1, P.draw_len_max))
    a = rate * dlen
    k = draw(st.integers(1, a))
    g = draw(st.integers(1, 8))  # p = k / a, written with a random common factor
    return draw(st.integers(1, 300)), k * g, a * g, draw(st.integers(1, 10**4)), rate, dlen


@SETTINGS
@given(escrow_shapes())
def test_min_penalty_is_floor_b_plus_one(shape):
    m, num, den, beta, rate, dlen = shape
    b = _literal_b(m, Fraction(num, den), beta, rate, dlen)
    least = compute_min_penalty(P, m, num, den, beta, rate, dlen)
    assert least == b.numerator // b.denominator + 1
    assert is_penalty_sufficient(P, least, m, num, den, beta, rate, dlen)
    assert not is_penalty_sufficient(P, least - 1, m, num, den, beta, rate, dlen)


def _model_reason(escrow_amount, penalty, num, den, beta, rate, dlen, m, distinct):
    """SPEC §3.1 in order, written as a reference model."""
    if not (0 < num <= den < 2**32 and beta > 0 and rate > 0 and 1 <= dlen <= P.draw_len_max):
        return "bad-escrow-params"
    if not (1 <= m <= P.max_merchants and distinct):
        return "bad-merchants"
    p = Fraction(num, den)
    a = rate * dlen
    k = p * a
    if k.denominator != 1 or k < 1 or a > P.max_draw_size or k > P.max_winners:
        return "bad-winners"
    l_esc = Fraction(escrow_amount) / (beta * p * rate)
    if (l_esc.denominator != 1 or l_esc % dlen != 0
            or not dlen <= l_esc <= P.max_escrow_rounds):
        return "bad-lifetime"
    if not penalty > _literal_b(m, p, beta, rate, dlen):
        return "penalty-too-low"
    return None


@st.composite
def escrow_bodies(draw):
    """Mostly-valid ESCROW_CREATE fields with at most one field disturbed."""
    m, num, den, beta, rate, dlen = draw(escrow_shapes())
    m = min(m, 20)
    p = Fraction(num, den)
    per_round = beta * p * rate
    l_esc = dlen * draw(st.integers(1, 4)) * per_round.denominator
    amount = int(per_round * l_esc)
    least = compute_min_penalty(P, m, num, den, beta, rate, dlen)
    penalty = least + draw(st.integers(-2, 2))
    merchants = [bytes([i + 1]) * 32 for i in range(m)]
    fields = dict(amount=amount, penalty=max(penalty, 0), num=num, den=den, beta=beta,
                  rate=rate, dlen=dlen)
    victim = draw(st.sampled_from(sorted(fields) + ["merchants", "none"]))
    if victim == "merchants":
        merchants = draw(st.sampled_from([[], merchants + merchants[:1]]))
    elif victim != "none":
        fields[victim] = draw(st.integers(0, 12) | st.integers(0, 2**40))
    return fields, merchants


@settings(max_examples=200, deadline=None)
@given(escrow_bodies())
def test_escrow_params_match_reference_model(body):
    f, merchants = body
    m = len(merchants)
    expected = _model_reason(f["amount"], f["penalty"], f["num"], f["den"], f["beta"],
                             f["rate"], f["dlen"], m, len(set(merchants)) == m)
    event(expected or "valid")
    try:
        l_esc = verify_escrow_params(P, f["amount"], f["penalty"], f["num"], f["den"],
                                     f["beta"], f["rate"], f["dlen"], merchants)
    except ConsensusError as exc:
        assert exc.reason == expected
    else:
        assert expected is None
        assert compute_escrow_amount(f["num"], f["den"], f["beta"], f["rate"], l_esc) \
            == f["amount"]
