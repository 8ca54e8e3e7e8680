"""MICROPAY escrows (SPEC §15): MP_ESCROW, MP_CLAIM, the refund at ``refund_height``,
the off-chain commitment and ticket, and every reject reason in the spec's order."""

import pytest

from consensus.encoding import packb
from consensus.hashing import tagged_hash
from consensus.micropay import (MpEscrowState, MpTicket, compute_mp_commitment,
                                compute_mp_escrow_id, compute_mp_ticket_message,
                                get_mp_escrow, get_mp_refunds_at, is_mp_winning,
                                sign_mp_ticket, verify_mp_ticket_signature)
from consensus.state import compute_money_total, compute_state_hash, get_issued
from consensus.tx import MP_CLAIM, MP_ESCROW, NONCE_KINDS, Tx, make_mp_claim, make_mp_escrow
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, CAROL_SEED,
                                     DAVE_SEED, MINER, PREMINE_EACH, Chain, assert_rejects,
                                     sign_tx)

R1 = bytes(range(16))
LOSING_R2 = R1[:-1] + bytes([R1[-1] ^ 1])  # low bit of r1 XOR r2 is 1


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


def _escrow_tx(chain, amount=1_000, win_bits=1, refund_in=10, fee=0, seed=ALICE_SEED,
               nonce=None):
    from consensus import keys
    owner = keys.public_key(seed)
    return make_mp_escrow(seed, chain.genesis_hash, chain.nonce(owner) if nonce is None
                          else nonce, fee, amount, win_bits, chain.height + 1 + refund_in)


def _create(chain, **kw) -> bytes:
    tx = _escrow_tx(chain, **kw)
    chain.mine([tx])
    return compute_mp_escrow_id(tx.txid())


def _claim(chain, mp_id, r1=R1, r2=R1, payee_seed=BOB_SEED, owner_seed=ALICE_SEED, fee=0,
           ticket_payee=None):
    from consensus import keys
    payee = keys.public_key(payee_seed) if ticket_payee is None else ticket_payee
    ticket = sign_mp_ticket(owner_seed, chain.genesis_hash, mp_id, compute_mp_commitment(r1),
                            r2, payee)
    return make_mp_claim(payee_seed, chain.genesis_hash, fee, mp_id, r1, r2, ticket.ticket_sig)


# ---- off-chain objects -----------------------------------------------------------------

def test_commitment_and_ticket_message_follow_the_spec():
    assert compute_mp_commitment(R1) == tagged_hash(b"mp-commit", R1)
    g, eid, c, r2, payee = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 16, BOB
    assert compute_mp_ticket_message(g, eid, c, r2, payee) == tagged_hash(
        b"mp-ticket", g + eid + c + r2 + payee)
    ticket = sign_mp_ticket(ALICE_SEED, g, eid, c, r2, payee)
    assert verify_mp_ticket_signature(ALICE, g, eid, c, r2, payee, ticket.ticket_sig)
    assert not verify_mp_ticket_signature(ALICE, g, eid, c, r2, CAROL, ticket.ticket_sig)
    assert not verify_mp_ticket_signature(BOB, g, eid, c, r2, payee, ticket.ticket_sig)
    assert MpTicket.decode(ticket.encode()) == ticket
    assert ticket.claim_body(R1).r1 == R1


def test_is_winning_tests_the_low_bits_of_r1_xor_r2():
    zero = bytes(16)
    assert is_mp_winning(zero, zero, 32)
    assert is_mp_winning(zero, (4).to_bytes(16, "big"), 2)       # ...100: low 2 bits zero
    assert not is_mp_winning(zero, (4).to_bytes(16, "big"), 3)
    assert not is_mp_winning(R1, LOSING_R2, 1)
    high = bytes([0x80]) + bytes(15)                             # only the top bit differs
    assert is_mp_winning(zero, high, 32)


def test_mp_kinds_and_nonce_rule():
    assert (MP_ESCROW, MP_CLAIM) == (5, 6)
    assert MP_ESCROW in NONCE_KINDS and MP_CLAIM not in NONCE_KINDS


# ---- MP_ESCROW -------------------------------------------------------------------------

def test_mp_escrow_creates_state_and_refund_index(chain):
    tx = _escrow_tx(chain, amount=1_000, win_bits=3, refund_in=10, fee=7)
    block = chain.mine([tx])
    h = block.header.height
    mp_id = compute_mp_escrow_id(tx.txid())
    assert mp_id == tagged_hash(b"mp-escrow", tx.txid())
    assert get_mp_escrow(chain.state, mp_id) == MpEscrowState(ALICE, 1_000, 3, h + 10)
    assert get_mp_refunds_at(chain.state, h + 10) == [mp_id]
    assert chain.balance(ALICE) == PREMINE_EACH - 1_007
    assert chain.nonce(ALICE) == 1
    assert compute_money_total(chain.state) == get_issued(chain.state)


@pytest.mark.parametrize("amount, win_bits, refund_in", [
    (0, 1, 5), (1, 0, 5), (1, 33, 5), (1, 1, 0), (1, 1, -1), (1, 1, 100_001)])
def test_invalid_bad_mp_params(chain, amount, win_bits, refund_in):
    tx = _escrow_tx(chain, amount=amount, win_bits=win_bits, refund_in=refund_in)
    assert_rejects("bad-mp-params", chain.check_tx, tx)


def test_mp_params_bounds_are_inclusive(chain):
    chain.check_tx(_escrow_tx(chain, win_bits=32, refund_in=1))
    chain.check_tx(_escrow_tx(chain, win_bits=1, refund_in=100_000))


def test_invalid_insufficient_funds_for_amount_or_fee(chain):
    assert_rejects("insufficient-funds", chain.check_tx,
                   _escrow_tx(chain, seed=DAVE_SEED, amount=1))
    assert_rejects("insufficient-funds", chain.check_tx,
                   _escrow_tx(chain, amount=PREMINE_EACH, fee=1))
    # rule 5 (fee) comes before the kind's rules: a broke sender with bad params
    assert_rejects("insufficient-funds", chain.check_tx,
                   _escrow_tx(chain, seed=DAVE_SEED, amount=0, fee=1))


def test_invalid_bad_nonce_mp_escrow(chain):
    assert_rejects("bad-nonce", chain.check_tx, _escrow_tx(chain, nonce=1))


# ---- MP_CLAIM --------------------------------------------------------------------------

def test_claim_pays_amount_minus_fee_and_deletes_the_escrow(chain):
    mp_id = _create(chain, amount=1_000, win_bits=4)
    miner_before = chain.balance(MINER)
    chain.mine([_claim(chain, mp_id, fee=30)])
    assert chain.balance(BOB) == PREMINE_EACH + 970
    assert chain.balance(MINER) == miner_before + chain.params.block_reward + 30
    assert get_mp_escrow(chain.state, mp_id) is None
    assert get_mp_refunds_at(chain.state, chain.height + 9) == []
    assert compute_money_total(chain.state) == get_issued(chain.state)
    # a second winner of the same escrow (another payee, another r1) finds nothing
    other_r1 = bytes(16)
    assert_rejects("unknown-mp-escrow", chain.check_tx,
                   _claim(chain, mp_id, r1=other_r1, r2=other_r1, payee_seed=CAROL_SEED))


def test_claim_and_escrow_in_one_block(chain):
    tx = _escrow_tx(chain, amount=500)
    mp_id = compute_mp_escrow_id(tx.txid())
    chain.mine([tx, _claim(chain, mp_id)])
    assert chain.balance(BOB) == PREMINE_EACH + 500
    assert get_mp_escrow(chain.state, mp_id) is None


def test_claim_by_a_payee_with_no_balance(chain):
    from consensus import keys
    mp_id = _create(chain, amount=800)
    chain.mine([_claim(chain, mp_id, payee_seed=DAVE_SEED, fee=8)])
    assert chain.balance(keys.public_key(DAVE_SEED)) == 792


def test_claim_in_the_last_block_before_refund_height(chain):
    mp_id = _create(chain, refund_in=3)
    refund_height = get_mp_escrow(chain.state, mp_id).refund_height
    chain.mine_to(refund_height - 2)
    chain.mine([_claim(chain, mp_id)])
    assert chain.height == refund_height - 1
    assert chain.balance(BOB) == PREMINE_EACH + 1_000


def test_invalid_unknown_mp_escrow(chain):
    assert_rejects("unknown-mp-escrow", chain.check_tx, _claim(chain, b"\x05" * 32))


def test_invalid_mp_escrow_expired_at_refund_height(chain):
    mp_id = _create(chain, refund_in=3)
    refund_height = get_mp_escrow(chain.state, mp_id).refund_height
    chain.mine_to(refund_height - 1)
    tx = _claim(chain, mp_id)
    assert_rejects("mp-escrow-expired", chain.check_tx, tx)  # as if in block refund_height
    assert_rejects("mp-escrow-expired", chain.try_connect, chain.build_block([tx]))


def test_invalid_bad_ticket_signature(chain):
    mp_id = _create(chain)
    # signed for another payee than the sender
    assert_rejects("bad-ticket-signature", chain.check_tx,
                   _claim(chain, mp_id, ticket_payee=CAROL))
    # signed by someone other than the escrow owner
    assert_rejects("bad-ticket-signature", chain.check_tx,
                   _claim(chain, mp_id, owner_seed=CAROL_SEED))
    # revealing an r1 that does not open the signed commitment
    good = _claim(chain, mp_id)
    wrong_r1 = bytes(16)
    forged = make_mp_claim(BOB_SEED, chain.genesis_hash, 0, mp_id, wrong_r1, wrong_r1,
                           good.body.ticket_sig)
    assert_rejects("bad-ticket-signature", chain.check_tx, forged)


def test_invalid_ticket_not_winning(chain):
    mp_id = _create(chain, win_bits=1)
    assert_rejects("ticket-not-winning", chain.check_tx, _claim(chain, mp_id, r2=LOSING_R2))


def test_invalid_fee_exceeds_payout_mp_claim(chain):
    mp_id = _create(chain, amount=100)
    chain.check_tx(_claim(chain, mp_id, fee=100))
    assert_rejects("fee-exceeds-payout", chain.check_tx, _claim(chain, mp_id, fee=101))


def test_invalid_bad_nonce_mp_claim(chain):
    mp_id = _create(chain)
    good = _claim(chain, mp_id)
    tx = sign_tx(BOB_SEED, chain.genesis_hash, MP_CLAIM, 1, 0, good.body.to_obj())
    assert_rejects("bad-nonce", chain.check_tx, Tx.decode(tx.encode()))


def test_claim_checks_follow_the_spec_order(chain):
    mp_id = _create(chain, amount=10, refund_in=2)
    refund_height = get_mp_escrow(chain.state, mp_id).refund_height
    # bad signature and losing and fee too high: the signature is named first
    assert_rejects("bad-ticket-signature", chain.check_tx,
                   _claim(chain, mp_id, r2=LOSING_R2, ticket_payee=CAROL, fee=11))
    # losing and fee too high: not-winning first
    assert_rejects("ticket-not-winning", chain.check_tx,
                   _claim(chain, mp_id, r2=LOSING_R2, fee=11))
    chain.mine_to(refund_height - 1)
    assert_rejects("mp-escrow-expired", chain.check_tx,
                   _claim(chain, mp_id, ticket_payee=CAROL))


# ---- refund ----------------------------------------------------------------------------

def test_refund_at_refund_height_then_disconnect_restores(chain):
    mp_id = _create(chain, amount=1_000, refund_in=4)
    refund_height = get_mp_escrow(chain.state, mp_id).refund_height
    chain.mine_to(refund_height - 1)
    assert get_mp_escrow(chain.state, mp_id) is not None
    before = dict(chain.state.items)
    hash_before = compute_state_hash(chain.state)
    chain.mine()
    assert get_mp_escrow(chain.state, mp_id) is None
    assert get_mp_refunds_at(chain.state, refund_height) == []
    assert chain.balance(ALICE) == PREMINE_EACH
    assert compute_money_total(chain.state) == get_issued(chain.state)
    assert compute_state_hash(chain.state) != hash_before
    chain.disconnect()
    assert chain.state.items == before


def test_disconnect_restores_a_claimed_escrow(chain):
    mp_id = _create(chain)
    before = dict(chain.state.items)
    chain.mine([_claim(chain, mp_id)])
    chain.disconnect()
    assert chain.state.items == before
    assert get_mp_escrow(chain.state, mp_id) is not None


# ---- encoding --------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    [1, 1], [1, 1, 1, 1], [1, 1, b"x"], [True, 1, 5], [1, -1, 5], "x", None, [1, 1, 2**63]])
def test_invalid_mp_escrow_body_shape(chain, body):
    tx = sign_tx(ALICE_SEED, chain.genesis_hash, MP_ESCROW, 0, 0, body)
    assert_rejects("bad-encoding", Tx.decode, tx.encode())


@pytest.mark.parametrize("body", [
    [b"\x00" * 32, R1, R1], [b"\x00" * 31, R1, R1, bytes(64)], [b"\x00" * 32, R1[:15], R1,
                                                               bytes(64)],
    [b"\x00" * 32, R1, R1 + b"\x00", bytes(64)], [b"\x00" * 32, R1, R1, bytes(63)],
    [b"\x00" * 32, 5, R1, bytes(64)], [b"\x00" * 32, R1, R1, bytes(64), 0]])
def test_invalid_mp_claim_body_shape(chain, body):
    tx = sign_tx(BOB_SEED, chain.genesis_hash, MP_CLAIM, 0, 0, body)
    assert_rejects("bad-encoding", Tx.decode, tx.encode())


def test_typed_body_round_trip_and_signing_message(chain):
    tx = _escrow_tx(chain)
    again = Tx.decode(tx.encode())
    assert again == tx and again.body == tx.body
    raw = sign_tx(ALICE_SEED, chain.genesis_hash, MP_ESCROW, tx.nonce, tx.fee,
                  tx.body.to_obj())
    assert raw.encode() == tx.encode()  # a list body and the typed body sign the same bytes
    assert packb(tx.to_obj()) == tx.encode()


def test_mp_state_decode_rejects_bad_shapes():
    good = MpEscrowState(ALICE, 5, 1, 9)
    assert MpEscrowState.decode(good.encode()) == good
    assert MpEscrowState.from_rpc(good.to_json()) == good
    assert_rejects("bad-encoding", MpEscrowState.decode, packb([ALICE, 5, 1]))
    assert_rejects("bad-encoding", MpEscrowState.decode, good.encode() + b"\x00")


# ---- payee-side helpers ----------------------------------------------------------------

def _payee_check(chain, mp_id, ticket, commitment, current_round, margin=0, payee=BOB):
    from consensus.micropay import verify_mp_ticket_for_payee
    verify_mp_ticket_for_payee(chain.genesis_hash, get_mp_escrow(chain.state, mp_id), ticket,
                               payee, commitment, current_round, margin)


def test_payee_accepts_a_ticket_it_can_still_claim(chain):
    from consensus.micropay import compute_mp_claim_deadline, compute_mp_expected_value
    mp_id = _create(chain, amount=1_000, win_bits=3, refund_in=5)
    escrow = get_mp_escrow(chain.state, mp_id)
    c = compute_mp_commitment(R1)
    ticket = sign_mp_ticket(ALICE_SEED, chain.genesis_hash, mp_id, c, LOSING_R2, BOB)
    deadline = compute_mp_claim_deadline(escrow)
    assert deadline == escrow.refund_height - 1
    _payee_check(chain, mp_id, ticket, c, deadline)
    _payee_check(chain, mp_id, ticket, c, deadline - 2, margin=2)
    assert compute_mp_expected_value(1_000, 3) == 125


def test_invalid_payee_checks_name_each_reason(chain):
    mp_id = _create(chain, refund_in=5)
    deadline = get_mp_escrow(chain.state, mp_id).refund_height - 1
    c = compute_mp_commitment(R1)
    ticket = sign_mp_ticket(ALICE_SEED, chain.genesis_hash, mp_id, c, R1, BOB)
    assert_rejects("unknown-mp-escrow", _payee_check, chain, b"\x01" * 32, ticket, c, 3)
    assert_rejects("mp-escrow-expired", _payee_check, chain, mp_id, ticket, c, deadline + 1)
    assert_rejects("mp-escrow-expired", _payee_check, chain, mp_id, ticket, c, deadline,
                   margin=1)
    assert_rejects("wrong-commitment", _payee_check, chain, mp_id, ticket,
                   compute_mp_commitment(bytes(16)), 3)
    assert_rejects("bad-ticket-signature", _payee_check, chain, mp_id, ticket, c, 3,
                   payee=CAROL)
