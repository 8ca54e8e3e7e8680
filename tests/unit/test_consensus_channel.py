"""Payment channels (SPEC §16): CHANNEL_OPEN, CHANNEL_CLOSE, CHANNEL_CHEAT, the expiry at
``expiry_height``, vouchers, penalty guidance, and every reject reason in the spec's order."""

from fractions import Fraction

import pytest

from consensus import keys
from consensus.channel import (ChannelState, Voucher, compute_channel_id,
                               compute_channel_penalty_guidance, compute_voucher_message,
                               get_channel, get_channel_expiries_at, is_equivocation,
                               sign_voucher, verify_voucher_signature)
from consensus.encoding import packb
from consensus.hashing import tagged_hash
from consensus.micropay import compute_mp_escrow_id, get_mp_escrow
from consensus.state import compute_money_total, get_issued
from consensus.tx import (CHANNEL_CHEAT, CHANNEL_CLOSE, CHANNEL_OPEN, NONCE_KINDS, Tx,
                          make_channel_cheat, make_channel_close, make_channel_open,
                          make_mp_escrow)
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, CAROL_SEED,
                                     DAVE, DAVE_SEED, MINER, PREMINE_EACH, Chain,
                                     assert_rejects, sign_tx)

DEPOSIT, PENALTY = 10_000, 3_000


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


def _open_tx(chain, payee=BOB, deposit=DEPOSIT, penalty=PENALTY, expiry_in=10, fee=0,
             seed=ALICE_SEED, nonce=None):
    payer = keys.public_key(seed)
    return make_channel_open(seed, chain.genesis_hash,
                             chain.nonce(payer) if nonce is None else nonce, fee, payee,
                             deposit, penalty, chain.height + 1 + expiry_in)


def _open(chain, **kw) -> bytes:
    tx = _open_tx(chain, **kw)
    chain.mine([tx])
    return compute_channel_id(tx.txid())


def _voucher(chain, ch_id, k, cumulative, seed=ALICE_SEED) -> Voucher:
    return sign_voucher(seed, chain.genesis_hash, ch_id, k, cumulative)


def _close(chain, ch_id, voucher, seed=BOB_SEED, fee=0):
    return make_channel_close(seed, chain.genesis_hash, fee, ch_id, voucher)


def _cheat(chain, ch_id, a, b, seed=BOB_SEED, fee=0):
    return make_channel_cheat(seed, chain.genesis_hash, fee, ch_id, a, b)


# ---- vouchers --------------------------------------------------------------------------

def test_voucher_message_signature_and_encoding():
    g, cid = b"\x01" * 32, b"\x02" * 32
    assert compute_voucher_message(g, cid, 3, 700) == tagged_hash(
        b"voucher", g + cid + packb([3, 700]))
    v = sign_voucher(ALICE_SEED, g, cid, 3, 700)
    assert verify_voucher_signature(ALICE, g, cid, v)
    assert not verify_voucher_signature(BOB, g, cid, v)
    assert not verify_voucher_signature(ALICE, g, b"\x03" * 32, v)
    assert not verify_voucher_signature(ALICE, g, cid, Voucher(3, 701, v.sig))
    assert Voucher.decode(v.encode()) == v
    assert_rejects("bad-encoding", Voucher.decode, packb([3, 700, bytes(63)]))
    assert_rejects("bad-encoding", Voucher.decode, packb([3, 700]))


def test_equivocation_is_same_k_different_cumulative():
    s = bytes(64)
    assert is_equivocation(Voucher(2, 5, s), Voucher(2, 6, s))
    assert not is_equivocation(Voucher(2, 5, s), Voucher(2, 5, b"\x01" * 64))
    assert not is_equivocation(Voucher(2, 5, s), Voucher(3, 6, s))
    assert not is_equivocation(Voucher(0, 5, s), Voucher(0, 6, s))


def test_channel_kinds_and_nonce_rule():
    assert (CHANNEL_OPEN, CHANNEL_CLOSE, CHANNEL_CHEAT) == (7, 8, 9)
    assert CHANNEL_OPEN in NONCE_KINDS
    assert not {CHANNEL_CLOSE, CHANNEL_CHEAT} & NONCE_KINDS


# ---- CHANNEL_OPEN ----------------------------------------------------------------------

def test_open_creates_state_and_expiry_index(chain):
    tx = _open_tx(chain, fee=9, expiry_in=10)
    h = chain.mine([tx]).header.height
    ch_id = compute_channel_id(tx.txid())
    assert ch_id == tagged_hash(b"channel", tx.txid())
    assert get_channel(chain.state, ch_id) == ChannelState(ALICE, BOB, DEPOSIT, PENALTY, h + 10)
    assert get_channel_expiries_at(chain.state, h + 10) == [ch_id]
    assert chain.balance(ALICE) == PREMINE_EACH - DEPOSIT - PENALTY - 9
    assert chain.nonce(ALICE) == 1
    assert compute_money_total(chain.state) == get_issued(chain.state)


def test_open_with_zero_penalty_and_bounds(chain):
    chain.check_tx(_open_tx(chain, penalty=0, expiry_in=2))        # expiry = h + 2
    chain.check_tx(_open_tx(chain, expiry_in=100_000))              # expiry = h + max


@pytest.mark.parametrize("fields", [dict(deposit=0), dict(payee=ALICE), dict(expiry_in=1),
                                    dict(expiry_in=0), dict(expiry_in=100_001)])
def test_invalid_bad_channel_params(chain, fields):
    assert_rejects("bad-channel-params", chain.check_tx, _open_tx(chain, **fields))


def test_invalid_insufficient_funds_channel_open(chain):
    assert_rejects("insufficient-funds", chain.check_tx,
                   _open_tx(chain, seed=DAVE_SEED, deposit=1, penalty=0))
    assert_rejects("insufficient-funds", chain.check_tx,
                   _open_tx(chain, deposit=PREMINE_EACH - PENALTY, fee=1))
    chain.check_tx(_open_tx(chain, deposit=PREMINE_EACH - PENALTY - 1, fee=1))


def test_invalid_bad_nonce_channel_open(chain):
    assert_rejects("bad-nonce", chain.check_tx, _open_tx(chain, nonce=5))


# ---- CHANNEL_CLOSE ---------------------------------------------------------------------

def test_close_splits_the_deposit(chain):
    ch_id = _open(chain)
    miner_before = chain.balance(MINER)
    alice_before = chain.balance(ALICE)
    chain.mine([_close(chain, ch_id, _voucher(chain, ch_id, 4, 2_500), fee=25)])
    assert chain.balance(BOB) == PREMINE_EACH + 2_500 - 25
    assert chain.balance(ALICE) == alice_before + DEPOSIT - 2_500 + PENALTY
    assert chain.balance(MINER) == miner_before + chain.params.block_reward + 25
    assert get_channel(chain.state, ch_id) is None
    assert compute_money_total(chain.state) == get_issued(chain.state)
    assert_rejects("unknown-channel", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 5, 3_000)))


def test_close_with_the_whole_deposit_or_nothing(chain):
    ch_id = _open(chain)
    chain.check_tx(_close(chain, ch_id, _voucher(chain, ch_id, 1, DEPOSIT), fee=DEPOSIT))
    chain.check_tx(_close(chain, ch_id, _voucher(chain, ch_id, 1, 0)))


def test_close_and_open_in_one_block(chain):
    tx = _open_tx(chain)
    ch_id = compute_channel_id(tx.txid())
    chain.mine([tx, _close(chain, ch_id, _voucher(chain, ch_id, 1, 100))])
    assert chain.balance(BOB) == PREMINE_EACH + 100


def test_invalid_unknown_channel(chain):
    assert_rejects("unknown-channel", chain.check_tx,
                   _close(chain, b"\x09" * 32, _voucher(chain, b"\x09" * 32, 1, 1)))


def test_invalid_wrong_payee(chain):
    ch_id = _open(chain)
    assert_rejects("wrong-payee", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 1, 1), seed=CAROL_SEED))
    assert_rejects("wrong-payee", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 1, 1), seed=ALICE_SEED))


def test_invalid_channel_expired(chain):
    ch_id = _open(chain, expiry_in=3)
    expiry = get_channel(chain.state, ch_id).expiry_height
    chain.mine_to(expiry - 2)
    chain.check_tx(_close(chain, ch_id, _voucher(chain, ch_id, 1, 1)))  # block expiry - 1
    chain.mine()
    tx = _close(chain, ch_id, _voucher(chain, ch_id, 1, 1))
    assert_rejects("channel-expired", chain.check_tx, tx)
    assert_rejects("channel-expired", chain.try_connect, chain.build_block([tx]))


def test_invalid_bad_voucher_signature(chain):
    ch_id = _open(chain)
    assert_rejects("bad-voucher-signature", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 1, 5, seed=BOB_SEED)))
    good = _voucher(chain, ch_id, 1, 5)
    assert_rejects("bad-voucher-signature", chain.check_tx,
                   _close(chain, ch_id, Voucher(1, 6, good.sig)))
    other = _open(chain)
    assert_rejects("bad-voucher-signature", chain.check_tx,
                   _close(chain, other, good))  # signed for another channel


def test_invalid_bad_voucher(chain):
    ch_id = _open(chain)
    assert_rejects("bad-voucher", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 1, DEPOSIT + 1)))
    assert_rejects("bad-voucher", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 0, 5)))


def test_invalid_fee_exceeds_payout_channel_close(chain):
    ch_id = _open(chain)
    assert_rejects("fee-exceeds-payout", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 2, 50), fee=51))
    assert_rejects("fee-exceeds-payout", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 2, 0), fee=1))


def test_invalid_bad_nonce_channel_close(chain):
    ch_id = _open(chain)
    body = [ch_id, _voucher(chain, ch_id, 1, 1).to_obj()]
    tx = sign_tx(BOB_SEED, chain.genesis_hash, CHANNEL_CLOSE, 1, 0, body)
    assert_rejects("bad-nonce", chain.check_tx, Tx.decode(tx.encode()))


def test_close_checks_follow_the_spec_order(chain):
    ch_id = _open(chain, expiry_in=2)
    bad_sig = _voucher(chain, ch_id, 0, DEPOSIT + 1, seed=CAROL_SEED)
    assert_rejects("wrong-payee", chain.check_tx,
                   _close(chain, ch_id, bad_sig, seed=CAROL_SEED, fee=10**9))
    assert_rejects("bad-voucher-signature", chain.check_tx,
                   _close(chain, ch_id, bad_sig, fee=10**9))
    assert_rejects("bad-voucher", chain.check_tx,
                   _close(chain, ch_id, _voucher(chain, ch_id, 1, DEPOSIT + 1), fee=10**9))
    chain.mine_to(get_channel(chain.state, ch_id).expiry_height - 1)
    assert_rejects("channel-expired", chain.check_tx, _close(chain, ch_id, bad_sig))


# ---- CHANNEL_CHEAT ---------------------------------------------------------------------

def test_cheat_pays_deposit_and_penalty_to_the_payee(chain):
    ch_id = _open(chain)
    alice_before = chain.balance(ALICE)
    a, b = _voucher(chain, ch_id, 7, 700), _voucher(chain, ch_id, 7, 650)
    chain.mine([_cheat(chain, ch_id, a, b, fee=13)])
    assert chain.balance(BOB) == PREMINE_EACH + DEPOSIT + PENALTY - 13
    assert chain.balance(ALICE) == alice_before
    assert get_channel(chain.state, ch_id) is None
    assert compute_money_total(chain.state) == get_issued(chain.state)


def test_invalid_bad_channel_cheat(chain):
    ch_id = _open(chain)
    a = _voucher(chain, ch_id, 7, 700)
    for b in (_voucher(chain, ch_id, 8, 650),                   # different k
              _voucher(chain, ch_id, 7, 700),                   # same cumulative
              Voucher(7, 700, bytes(64)),                       # same state, other bytes
              _voucher(chain, ch_id, 7, 650, seed=CAROL_SEED),  # not the payer's
              Voucher(7, 650, a.sig)):                          # signature does not match
        assert_rejects("bad-channel-cheat", chain.check_tx, _cheat(chain, ch_id, a, b))
    zero_a, zero_b = _voucher(chain, ch_id, 0, 1), _voucher(chain, ch_id, 0, 2)
    assert_rejects("bad-channel-cheat", chain.check_tx, _cheat(chain, ch_id, zero_a, zero_b))


def test_invalid_cheat_first_three_checks(chain):
    ch_id = _open(chain, expiry_in=2)
    a, b = _voucher(chain, ch_id, 1, 1), _voucher(chain, ch_id, 1, 2)
    assert_rejects("unknown-channel", chain.check_tx, _cheat(chain, b"\x04" * 32, a, b))
    assert_rejects("wrong-payee", chain.check_tx, _cheat(chain, ch_id, a, b, seed=DAVE_SEED))
    chain.mine_to(get_channel(chain.state, ch_id).expiry_height - 1)
    assert_rejects("channel-expired", chain.check_tx, _cheat(chain, ch_id, a, b))


def test_invalid_fee_exceeds_payout_channel_cheat(chain):
    ch_id = _open(chain)
    a, b = _voucher(chain, ch_id, 1, 1), _voucher(chain, ch_id, 1, 2)
    chain.check_tx(_cheat(chain, ch_id, a, b, fee=DEPOSIT + PENALTY))
    assert_rejects("fee-exceeds-payout", chain.check_tx,
                   _cheat(chain, ch_id, a, b, fee=DEPOSIT + PENALTY + 1))


def test_cheat_vouchers_above_the_deposit_still_prove_equivocation(chain):
    ch_id = _open(chain)
    a, b = _voucher(chain, ch_id, 1, DEPOSIT + 1), _voucher(chain, ch_id, 1, DEPOSIT + 2)
    chain.check_tx(_cheat(chain, ch_id, a, b))


# ---- expiry ----------------------------------------------------------------------------

def test_expiry_returns_deposit_and_penalty_then_disconnect_restores(chain):
    ch_id = _open(chain, expiry_in=3)
    expiry = get_channel(chain.state, ch_id).expiry_height
    chain.mine_to(expiry - 1)
    before = dict(chain.state.items)
    chain.mine()
    assert get_channel(chain.state, ch_id) is None
    assert get_channel_expiries_at(chain.state, expiry) == []
    assert chain.balance(ALICE) == PREMINE_EACH
    assert compute_money_total(chain.state) == get_issued(chain.state)
    chain.disconnect()
    assert chain.state.items == before


def test_mp_refund_and_channel_expiry_in_one_block(chain):
    h = chain.height + 1
    mp = make_mp_escrow(ALICE_SEED, chain.genesis_hash, 0, 0, 500, 2, h + 3)
    op = make_channel_open(ALICE_SEED, chain.genesis_hash, 1, 0, CAROL, 700, 50, h + 3)
    chain.mine([mp, op])
    chain.mine_to(h + 3)
    assert get_mp_escrow(chain.state, compute_mp_escrow_id(mp.txid())) is None
    assert get_channel(chain.state, compute_channel_id(op.txid())) is None
    assert chain.balance(ALICE) == PREMINE_EACH


def test_disconnect_restores_a_closed_channel(chain):
    ch_id = _open(chain)
    before = dict(chain.state.items)
    chain.mine([_close(chain, ch_id, _voucher(chain, ch_id, 1, 10))])
    chain.disconnect()
    assert chain.state.items == before


# ---- encoding --------------------------------------------------------------------------

@pytest.mark.parametrize("kind, body", [
    (CHANNEL_OPEN, [BOB, 1, 0]), (CHANNEL_OPEN, [BOB[:31], 1, 0, 9]),
    (CHANNEL_OPEN, [BOB, -1, 0, 9]), (CHANNEL_OPEN, [BOB, 1, False, 9]),
    (CHANNEL_CLOSE, [b"\x00" * 32]), (CHANNEL_CLOSE, [b"\x00" * 32, [1, 2]]),
    (CHANNEL_CLOSE, [b"\x00" * 32, [1, 2, bytes(64), 3]]),
    (CHANNEL_CLOSE, [b"\x00" * 32, [1, 2, bytes(65)]]),
    (CHANNEL_CLOSE, [b"\x00" * 32, [b"\x01", 2, bytes(64)]]),
    (CHANNEL_CLOSE, [b"\x00" * 32, None]),
    (CHANNEL_CHEAT, [b"\x00" * 32, [1, 2, bytes(64)]]),
    (CHANNEL_CHEAT, [b"\x00" * 32, [1, 2, bytes(64)], [1, 3]]),
    (CHANNEL_CHEAT, [b"\x00" * 33, [1, 2, bytes(64)], [1, 3, bytes(64)]])])
def test_invalid_channel_body_shape(chain, kind, body):
    tx = sign_tx(BOB_SEED, chain.genesis_hash, kind, 0, 0, body)
    assert_rejects("bad-encoding", Tx.decode, tx.encode())


def test_channel_state_round_trip():
    s = ChannelState(ALICE, BOB, 5, 0, 99)
    assert ChannelState.decode(s.encode()) == s
    assert ChannelState.from_rpc(s.to_json()) == s
    assert_rejects("bad-encoding", ChannelState.decode, packb([ALICE, BOB, 5, 0]))


# ---- penalty guidance (policy) ---------------------------------------------------------

def test_penalty_guidance_is_payments_per_interval_times_max_price():
    assert compute_channel_penalty_guidance(60, 2, 1_000) == 30_000
    assert compute_channel_penalty_guidance(10, 3, 7) == 23            # floor(70 / 3): p <= bound
    assert compute_channel_penalty_guidance(Fraction(1, 2), 1, 10) == 5
    assert compute_channel_penalty_guidance(0, 1, 10) == 0


def test_invalid_penalty_guidance_inputs():
    with pytest.raises(ValueError):
        compute_channel_penalty_guidance(10, 0, 5)
    with pytest.raises(ValueError):
        compute_channel_penalty_guidance(-1, 1, 5)


# ---- payee-side helpers ----------------------------------------------------------------

def _accept(chain, ch_id, voucher, last_k=0, last_cumulative=0, price=10, current_round=None,
            margin=0):
    from consensus.channel import verify_voucher_for_payee
    verify_voucher_for_payee(chain.genesis_hash, ch_id, get_channel(chain.state, ch_id),
                             voucher, last_k, last_cumulative, price,
                             chain.height + 1 if current_round is None else current_round,
                             margin)


def test_payee_accepts_the_next_voucher(chain):
    from consensus.channel import compute_channel_close_deadline
    ch_id = _open(chain, expiry_in=5)
    deadline = compute_channel_close_deadline(get_channel(chain.state, ch_id))
    assert deadline == get_channel(chain.state, ch_id).expiry_height - 1
    _accept(chain, ch_id, _voucher(chain, ch_id, 1, 10))
    _accept(chain, ch_id, _voucher(chain, ch_id, 4, 75), last_k=3, last_cumulative=60,
            price=15, current_round=deadline)


def test_invalid_payee_voucher_checks_name_each_reason(chain):
    ch_id = _open(chain, expiry_in=5)
    deadline = get_channel(chain.state, ch_id).expiry_height - 1
    v = _voucher(chain, ch_id, 2, 30)
    assert_rejects("unknown-channel", _accept, chain, b"\x02" * 32, v)
    assert_rejects("channel-expired", _accept, chain, ch_id, v, last_k=1,
                   current_round=deadline + 1)
    assert_rejects("channel-expired", _accept, chain, ch_id, v, last_k=1,
                   current_round=deadline, margin=1)
    assert_rejects("bad-voucher-signature", _accept, chain, ch_id, Voucher(2, 31, v.sig),
                   last_k=1)
    assert_rejects("voucher-out-of-order", _accept, chain, ch_id, v, last_k=2)
    assert_rejects("voucher-out-of-order", _accept, chain, ch_id, v, last_k=0)
    assert_rejects("voucher-underpaid", _accept, chain, ch_id, v, last_k=1,
                   last_cumulative=25, price=10)
    assert_rejects("bad-voucher", _accept, chain, ch_id,
                   _voucher(chain, ch_id, 2, DEPOSIT + 1), last_k=1)
