"""REDEEM, CHEAT_PROOF, breaking and refunding escrows (SPEC §6–§9, paper §4.3–§4.5).

The standard escrow: owner ALICE, merchants [BOB, CAROL], p = 1/2, beta 2, tkt_rate 2,
draw_len 1, l_esc 4 (so a = 2, k = 1, N = 8, escrow 8, least penalty 17). Created in block
2, so start = 5, t_draw(g) = 8 + g, t_expire(g) = 14 + g, t_refund = 17.
"""

from dataclasses import replace

import pytest

from consensus.state import (compute_money_total, get_burned, get_issued, get_refunds_at,
                             iter_redeemed)
from consensus.ticket import sign_ticket
from consensus.tx import make_cheat_proof
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, CAROL_SEED,
                                     DAVE, DAVE_SEED, MINER, Chain, assert_rejects)

BETA = 2


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


@pytest.fixture
def eid(chain) -> bytes:
    escrow_id = chain.create_escrow(ALICE_SEED, [BOB, CAROL])
    e = chain.escrow(escrow_id)
    assert (e.start, e.N, e.t_refund, e.penalty_balance) == (5, 8, 17, 17)
    assert [chain.t_draw(escrow_id, g) for g in range(4)] == [8, 9, 10, 11]
    return escrow_id


def _conserved(chain) -> None:
    assert compute_money_total(chain.state) == get_issued(chain.state)


def _winner(chain, eid, g=0) -> int:
    return chain.winners(eid, g)[0]


# ---- valid redeems ---------------------------------------------------------------------

def test_redeem_in_block_t_draw_plus_one(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    assert chain.height == 8  # the next block is t_draw(0) + 1 = 9
    seq = _winner(chain, eid)
    before = chain.balance(BOB)
    block = chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)], fee=1)])
    assert block.header.height == 9
    assert chain.balance(BOB) == before + BETA - 1
    assert chain.escrow(eid).escrow_balance == 8 - BETA
    assert chain.escrow(eid).penalty_balance == 17
    assert iter_redeemed(chain.state, eid) == [(seq, 0, 9)]
    assert chain.winners(eid, 0) == [seq]  # the state's draw agrees with the tip VDF
    _conserved(chain)


def test_redeem_by_merchant_without_balance(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    assert chain.balance(CAROL) == 0
    seq = _winner(chain, eid)
    miner = chain.balance(MINER)
    chain.mine([chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, seq)], fee=BETA)])
    assert chain.balance(CAROL) == 0  # fee == payout is allowed
    assert chain.balance(MINER) == miner + chain.params.block_reward + BETA
    _conserved(chain)


def test_redeem_at_t_expire_is_last_chance(chain, eid):
    chain.mine_to(13)  # next block is t_expire(0) = 14
    seq = _winner(chain, eid)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)])])
    assert iter_redeemed(chain.state, eid) == [(seq, 0, 14)]


def test_redeem_many_tickets_of_several_groups(chain, eid):
    chain.mine_to(11)  # groups 0..2 are drawn (t_draw + 1 <= 12), group 3 at 12
    tickets = [chain.ticket(eid, 0, _winner(chain, eid, g)) for g in range(3)]
    chain.mine([chain.redeem(BOB_SEED, tickets)])
    assert chain.escrow(eid).escrow_balance == 8 - 3 * BETA
    assert len(iter_redeemed(chain.state, eid)) == 3


# ---- REDEEM reject reasons -------------------------------------------------------------

def test_invalid_unknown_escrow(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = sign_ticket(ALICE_SEED, chain.genesis_hash, bytes(32), 0, 0)
    assert_rejects("unknown-escrow", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))
    good = chain.ticket(eid, 0, _winner(chain, eid))
    assert_rejects("unknown-escrow", chain.check_tx, chain.redeem(BOB_SEED, [good, ticket]))


def test_invalid_bad_ticket_signature(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    seq = _winner(chain, eid)
    good = chain.ticket(eid, 0, seq)
    wrong_signer = sign_ticket(BOB_SEED, chain.genesis_hash, eid, 0, seq)
    other_chain = sign_ticket(ALICE_SEED, bytes(32), eid, 0, seq)
    flipped = replace(good, sig=bytes([good.sig[5] ^ 0x40]) + good.sig[:5] + good.sig[6:])
    moved = replace(chain.ticket(eid, 0, seq ^ 1), seqno=seq)  # a = 2: the other seqno
    for bad in (wrong_signer, other_chain, flipped, moved):
        assert_rejects("bad-ticket-signature", chain.check_tx, chain.redeem(BOB_SEED, [bad]))


def test_invalid_wrong_merchant(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    seq = _winner(chain, eid)
    carols = chain.ticket(eid, 1, seq)
    assert_rejects("wrong-merchant", chain.check_tx, chain.redeem(BOB_SEED, [carols]))
    assert_rejects("wrong-merchant", chain.check_tx, chain.redeem(DAVE_SEED, [carols]))


def test_invalid_wrong_merchant_index_out_of_list(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    seq = _winner(chain, eid)
    for index in (2, 2**16 - 1):
        ticket = chain.ticket(eid, index, seq)
        assert_rejects("wrong-merchant", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


@pytest.mark.parametrize("seqno", [8, 9, 2**63, 2**64 - 1])
def test_invalid_seqno_out_of_range(chain, eid, seqno):
    chain.mine_to(16)
    ticket = chain.ticket(eid, 0, seqno)
    assert_rejects("seqno-out-of-range", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


def test_invalid_ticket_not_drawn(chain, eid):
    chain.mine_to(7)  # the next block is t_draw(0) = 8: the draw is not revealed yet
    for seq in (0, 1, 7):
        ticket = chain.ticket(eid, 0, seq)
        assert_rejects("ticket-not-drawn", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))
    assert_rejects("ticket-not-drawn", chain.try_connect,
                   chain.build_block([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, 0)])]))


def test_invalid_ticket_not_drawn_later_group(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = chain.ticket(eid, 0, 2)  # group 1: t_draw + 1 = 10
    assert_rejects("ticket-not-drawn", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


def test_invalid_ticket_expired(chain, eid):
    chain.mine_to(14)  # next block 15 > t_expire(0) = 14
    seq = chain.winners(eid, 0)[0]
    ticket = chain.ticket(eid, 0, seq)
    assert_rejects("ticket-expired", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))
    # group 1 (t_expire 15) is still redeemable in block 15
    chain.check_tx(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, _winner(chain, eid, 1))]))


def test_invalid_ticket_not_winning(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    loser = chain.losers(eid, 0)[0]
    ticket = chain.ticket(eid, 0, loser)
    assert_rejects("ticket-not-winning", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))
    assert_rejects("ticket-not-winning", chain.try_connect,
                   chain.build_block([chain.redeem(BOB_SEED, [ticket])]))


def test_invalid_ticket_not_winning_rejects_whole_redeem(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    win = chain.ticket(eid, 0, _winner(chain, eid))
    lose = chain.ticket(eid, 0, chain.losers(eid, 0)[0])
    block = chain.build_block([chain.redeem(BOB_SEED, [win, lose])])
    assert_rejects("ticket-not-winning", chain.try_connect, block)
    assert iter_redeemed(chain.state, eid) == []
    chain.mine([chain.redeem(BOB_SEED, [win])])  # the winner alone is still good


def test_invalid_ticket_already_redeemed_across_blocks(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = chain.ticket(eid, 0, _winner(chain, eid))
    chain.mine([chain.redeem(BOB_SEED, [ticket])])
    again = chain.redeem(BOB_SEED, [ticket], fee=1)  # another txid
    assert_rejects("ticket-already-redeemed", chain.check_tx, again)
    assert_rejects("ticket-already-redeemed", chain.try_connect, chain.build_block([again]))


def test_invalid_ticket_already_redeemed_twice_in_one_tx(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = chain.ticket(eid, 0, _winner(chain, eid))
    assert_rejects("ticket-already-redeemed", chain.check_tx,
                   chain.redeem(BOB_SEED, [ticket, ticket]))


def test_invalid_ticket_already_redeemed_twice_in_one_block(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = chain.ticket(eid, 0, _winner(chain, eid))
    block = chain.build_block([chain.redeem(BOB_SEED, [ticket]),
                               chain.redeem(BOB_SEED, [ticket], fee=1)])
    assert_rejects("ticket-already-redeemed", chain.try_connect, block)


def test_invalid_fee_exceeds_payout(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = chain.ticket(eid, 0, _winner(chain, eid))
    assert_rejects("fee-exceeds-payout", chain.check_tx,
                   chain.redeem(BOB_SEED, [ticket], fee=BETA + 1))
    chain.check_tx(chain.redeem(BOB_SEED, [ticket], fee=BETA))


def test_invalid_escrow_exhausted(chain):
    # p = 1, beta 1, one round: escrow 1; three merchants: least penalty 13
    eid = chain.create_escrow(ALICE_SEED, [BOB, CAROL, DAVE], win_num=1, win_den=1, beta=1,
                              tkt_rate=1, draw_len=1, l_esc=1)
    e = chain.escrow(eid)
    assert (e.escrow_balance, e.penalty_balance) == (1, 13)
    chain.mine_to_redeemable(eid, 0)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, 0)])])
    chain.mine([chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, 0)])])  # duplicate
    e = chain.escrow(eid)
    assert (e.escrow_balance, e.penalty_balance, e.broken) == (0, 0, True)
    assert get_burned(chain.state) == 12
    assert_rejects("escrow-exhausted", chain.check_tx,
                   chain.redeem(DAVE_SEED, [chain.ticket(eid, 2, 0)]))
    _conserved(chain)


# ---- duplicates, breaking, D1 ----------------------------------------------------------

def test_duplicate_redeem_pays_from_penalty_breaks_and_burns(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    seq = _winner(chain, eid)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)])])
    burned = get_burned(chain.state)
    chain.mine([chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, seq)])])
    e = chain.escrow(eid)
    assert chain.balance(CAROL) == BETA
    assert e.escrow_balance == 8 - BETA        # the duplicate's beta came from the penalty
    assert e.penalty_balance == 0
    assert e.broken
    assert get_burned(chain.state) == burned + 17 - BETA
    assert iter_redeemed(chain.state, eid) == [(seq, 0, 9), (seq, 1, 10)]
    _conserved(chain)


def test_duplicate_redeem_in_the_same_block(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    seq = _winner(chain, eid)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)]),
                chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, seq)])])
    e = chain.escrow(eid)
    assert (e.escrow_balance, e.penalty_balance, e.broken) == (8 - BETA, 0, True)
    assert get_burned(chain.state) == 17 - BETA
    _conserved(chain)


def test_broken_escrow_still_pays_later_draws_d1(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    seq = _winner(chain, eid)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)]),
                chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, seq)])])
    chain.mine_to(11)
    for g in (1, 2, 3):
        chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, _winner(chain, eid, g))])])
    e = chain.escrow(eid)
    assert e.escrow_balance == 8 - 4 * BETA == 0
    # a duplicate on an already broken escrow is paid from what is left: nothing
    assert_rejects("escrow-exhausted", chain.check_tx,
                   chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, _winner(chain, eid, 3))]))
    _conserved(chain)


def test_duplicate_on_broken_escrow_pays_from_escrow_balance(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    proof = make_cheat_proof(DAVE_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 8), None)
    seq = _winner(chain, eid)
    chain.mine([proof, chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)])])
    assert chain.escrow(eid).broken
    chain.mine([chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, seq)])])
    e = chain.escrow(eid)
    assert (e.escrow_balance, e.penalty_balance) == (8 - 2 * BETA, 0)
    assert get_burned(chain.state) == 17
    _conserved(chain)


# ---- CHEAT_PROOF -----------------------------------------------------------------------

def test_cheat_proof_out_of_range_burns_penalty(chain, eid):
    proof = make_cheat_proof(DAVE_SEED, chain.genesis_hash, 0, chain.ticket(eid, 1, 8), None)
    chain.mine([proof])
    e = chain.escrow(eid)
    assert (e.broken, e.penalty_balance, e.escrow_balance) == (True, 0, 8)
    assert get_burned(chain.state) == 17
    _conserved(chain)


def test_cheat_proof_duplicate_pair_with_fee(chain, eid):
    a, b = chain.ticket(eid, 0, 3), chain.ticket(eid, 1, 3)
    before = chain.balance(BOB)
    chain.mine([make_cheat_proof(BOB_SEED, chain.genesis_hash, 5, a, b)])
    assert chain.escrow(eid).broken
    assert chain.balance(BOB) == before - 5
    assert get_burned(chain.state) == 17
    _conserved(chain)


def test_invalid_unknown_escrow_cheat_proof(chain, eid):
    ticket = sign_ticket(ALICE_SEED, chain.genesis_hash, bytes(32), 0, 10**9)
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, ticket, None)
    assert_rejects("unknown-escrow", chain.check_tx, proof)


def test_invalid_escrow_broken(chain, eid):
    chain.mine([make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 8),
                                 None)])
    again = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 9), None)
    assert_rejects("escrow-broken", chain.check_tx, again)
    # escrow-broken is checked before the proof itself
    bogus = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 1), None)
    assert_rejects("escrow-broken", chain.check_tx, bogus)


def test_invalid_escrow_broken_two_proofs_in_one_block(chain, eid):
    first = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 8), None)
    second = make_cheat_proof(CAROL_SEED, chain.genesis_hash, 0, chain.ticket(eid, 1, 8), None)
    assert_rejects("escrow-broken", chain.try_connect, chain.build_block([first, second]))


def test_invalid_bad_cheat_proof_same_merchant_index(chain, eid):
    a = chain.ticket(eid, 0, 3)
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, a, a)
    assert_rejects("bad-cheat-proof", chain.check_tx, proof)


def test_invalid_bad_cheat_proof_different_seqno(chain, eid):
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 3),
                             chain.ticket(eid, 1, 4))
    assert_rejects("bad-cheat-proof", chain.check_tx, proof)


def test_invalid_bad_cheat_proof_different_escrow(chain, eid):
    other = chain.create_escrow(ALICE_SEED, [BOB, CAROL])
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 3),
                             chain.ticket(other, 1, 3))
    assert_rejects("bad-cheat-proof", chain.check_tx, proof)


def test_invalid_bad_cheat_proof_bad_signature(chain, eid):
    good_a, good_b = chain.ticket(eid, 0, 3), chain.ticket(eid, 1, 3)
    forged_b = sign_ticket(BOB_SEED, chain.genesis_hash, eid, 1, 3)
    forged_a = replace(good_a, sig=good_b.sig)
    for a, b in ((good_a, forged_b), (forged_a, good_b)):
        proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, a, b)
        assert_rejects("bad-cheat-proof", chain.check_tx, proof)
    forged_single = sign_ticket(BOB_SEED, chain.genesis_hash, eid, 0, 8)
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, forged_single, None)
    assert_rejects("bad-cheat-proof", chain.check_tx, proof)
    assert not chain.escrow(eid).broken


@pytest.mark.parametrize("seqno", [0, 7])
def test_invalid_bad_cheat_proof_in_range_single_ticket(chain, eid, seqno):
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, seqno),
                             None)
    assert_rejects("bad-cheat-proof", chain.check_tx, proof)


# ---- refund (SPEC §9) --------------------------------------------------------------------

def test_refund_at_t_refund_deletes_escrow_and_redeemed_records(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, _winner(chain, eid))])])
    chain.mine_to(16)
    assert chain.escrow(eid) is not None
    owner_before = chain.balance(ALICE)
    chain.mine()  # block 17 = t_refund
    assert chain.escrow(eid) is None
    assert iter_redeemed(chain.state, eid) == []
    assert get_refunds_at(chain.state, 17) == []
    assert chain.balance(ALICE) == owner_before + (8 - BETA) + 17
    assert not any(k.startswith(b"r") for k in chain.state.items)
    _conserved(chain)


def test_refund_after_transactions_of_the_same_block(chain, eid):
    chain.mine_to(16)  # block 17 is t_refund = t_expire(3): the last group still redeems
    seq = _winner(chain, eid, 3)
    owner_before = chain.balance(ALICE)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, seq)])])
    assert chain.escrow(eid) is None
    assert chain.balance(ALICE) == owner_before + 8 - BETA + 17
    _conserved(chain)


def test_refund_of_broken_escrow_pays_residue_only(chain, eid):
    chain.mine([make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 8),
                                 None)])
    chain.mine_to(16)
    owner_before = chain.balance(ALICE)
    chain.mine()
    assert chain.balance(ALICE) == owner_before + 8
    assert get_burned(chain.state) == 17
    _conserved(chain)


def test_invalid_unknown_escrow_after_refund(chain, eid):
    chain.mine_to(17)
    assert chain.escrow(eid) is None
    ticket = chain.ticket(eid, 0, 7)
    assert_rejects("unknown-escrow", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, chain.ticket(eid, 0, 8), None)
    assert_rejects("unknown-escrow", chain.check_tx, proof)


def test_disconnect_refund_block_restores_escrow_and_records(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, _winner(chain, eid))])])
    chain.mine_to(16)
    snapshot = dict(chain.state.items)
    chain.mine()
    assert chain.escrow(eid) is None
    chain.disconnect()
    assert chain.state.items == snapshot
    assert len(iter_redeemed(chain.state, eid)) == 1



# ---- order of the REDEEM and CHEAT_PROOF checks (SPEC §7 steps 1–3, §8) --------------------

def test_invalid_bad_ticket_signature_before_wrong_merchant(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    forged = sign_ticket(BOB_SEED, chain.genesis_hash, eid, 1, 100)  # also CAROL's, out of range
    assert_rejects("bad-ticket-signature", chain.check_tx, chain.redeem(BOB_SEED, [forged]))


def test_invalid_wrong_merchant_before_seqno_out_of_range(chain, eid):
    chain.mine_to_redeemable(eid, 0)
    ticket = chain.ticket(eid, 1, 100)
    assert_rejects("wrong-merchant", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


def test_invalid_seqno_out_of_range_before_ticket_not_drawn(chain, eid):
    chain.mine_to(4)  # nothing is drawn yet
    ticket = chain.ticket(eid, 0, 8)
    assert_rejects("seqno-out-of-range", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


def test_invalid_ticket_not_drawn_before_ticket_not_winning(chain, eid):
    chain.mine_to(6)
    for seq in (0, 1):  # one of them loses group 0, but its draw is not known yet
        ticket = chain.ticket(eid, 0, seq)
        assert_rejects("ticket-not-drawn", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


def test_invalid_ticket_expired_before_ticket_not_winning(chain, eid):
    chain.mine_to(15)
    loser = chain.losers(eid, 0)[0]
    ticket = chain.ticket(eid, 0, loser)
    assert_rejects("ticket-expired", chain.check_tx, chain.redeem(BOB_SEED, [ticket]))


def test_invalid_unknown_escrow_before_bad_cheat_proof(chain, eid):
    ticket = sign_ticket(ALICE_SEED, chain.genesis_hash, b"\x01" * 32, 0, 0)  # in range
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, ticket, ticket)
    assert_rejects("unknown-escrow", chain.check_tx, proof)
