"""Common transaction rules (SPEC §2): coinbase, signature, nonce, fees, TRANSFER."""

from dataclasses import replace

import pytest

from consensus import keys
from consensus.state import compute_money_total, get_issued
from consensus.tx import (CHEAT_PROOF, COINBASE, REDEEM, TRANSFER, make_cheat_proof,
                          make_coinbase, make_redeem, make_transfer)
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, CAROL_SEED,
                                     DAVE, DAVE_SEED, MINER, PREMINE_EACH, Chain, assert_rejects,
                                     sign_tx)


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


def _transfer(chain, seed=ALICE_SEED, to=DAVE, amount=1000, fee=10, nonce=None):
    sender = keys.public_key(seed)
    return make_transfer(seed, chain.genesis_hash,
                         chain.nonce(sender) if nonce is None else nonce, fee, to, amount)


def _fund(chain, address, amount):
    chain.mine([_transfer(chain, to=address, amount=amount, fee=0)])


# ---- valid transfers -----------------------------------------------------------------

def test_transfer_moves_amount_pays_fee_and_bumps_nonce(chain):
    miner_before = chain.balance(MINER)
    issued_before = get_issued(chain.state)
    chain.mine([_transfer(chain, amount=1000, fee=10)])
    assert chain.balance(ALICE) == PREMINE_EACH - 1010
    assert chain.balance(DAVE) == 1000
    assert chain.nonce(ALICE) == 1
    assert chain.nonce(DAVE) == 0
    assert chain.balance(MINER) == miner_before + chain.params.block_reward + 10
    assert get_issued(chain.state) == issued_before + chain.params.block_reward
    assert compute_money_total(chain.state) == get_issued(chain.state)


def test_transfers_apply_in_block_order(chain):
    first = _transfer(chain, nonce=0)
    second = _transfer(chain, nonce=1, amount=7)
    chain.mine([first, second])
    assert chain.nonce(ALICE) == 2
    assert chain.balance(DAVE) == 1007


def test_transfer_to_self(chain):
    chain.mine([_transfer(chain, to=ALICE, amount=500, fee=3)])
    assert chain.balance(ALICE) == PREMINE_EACH - 3
    assert chain.nonce(ALICE) == 1


def test_transfer_spends_whole_balance(chain):
    _fund(chain, CAROL, 100)
    chain.mine([_transfer(chain, CAROL_SEED, amount=90, fee=10)])
    assert chain.balance(CAROL) == 0
    assert chain.nonce(CAROL) == 1


def test_coinbase_may_pay_less_and_mints_only_what_it_pays(chain):
    tx = _transfer(chain, fee=10)
    issued = get_issued(chain.state)
    chain.mine([tx], coinbase=make_coinbase(chain.height + 1, [(MINER, 4)]))
    assert get_issued(chain.state) == issued + 4 - 10  # fees not claimed are destroyed
    assert compute_money_total(chain.state) == get_issued(chain.state)


def test_coinbase_sixteen_outputs_and_reward_plus_fees(chain):
    tx = _transfer(chain, fee=16)
    total = chain.params.block_reward + 16
    outs = [(bytes([i]) * 32, total // 16) for i in range(16)]
    chain.mine([tx], coinbase=make_coinbase(chain.height + 1, outs))
    assert chain.balance(bytes([3]) * 32) == total // 16


# ---- bad-coinbase ----------------------------------------------------------------------

def test_invalid_bad_coinbase_not_first(chain):
    tx = _transfer(chain)
    block = chain.build_block(all_txs=(tx, chain.coinbase([tx])))
    assert_rejects("bad-coinbase", chain.try_connect, block)


def test_invalid_bad_coinbase_missing(chain):
    block = chain.build_block(all_txs=(_transfer(chain),))
    assert_rejects("bad-coinbase", chain.try_connect, block)
    assert_rejects("bad-coinbase", chain.try_connect, chain.build_block(all_txs=()))


def test_invalid_bad_coinbase_twice(chain):
    first = chain.coinbase()
    second = make_coinbase(chain.height + 1, [(ALICE, 1)])
    block = chain.build_block(all_txs=(first, second))
    assert_rejects("bad-coinbase", chain.try_connect, block)


@pytest.mark.parametrize("field,value", [
    ("sender", ALICE), ("sender", bytes(31) + b"\x01"),
    ("sig", b"\x01" + bytes(63)), ("sig", bytes(63) + b"\x01"),
])
def test_invalid_bad_coinbase_nonzero_sender_sig(chain, field, value):
    block = chain.build_block(coinbase=replace(chain.coinbase(), **{field: value}))
    assert_rejects("bad-coinbase", chain.try_connect, block)


@pytest.mark.parametrize("delta", [-1, 1, 100])
def test_invalid_bad_coinbase_wrong_nonce(chain, delta):
    block = chain.build_block(coinbase=chain.coinbase(height=chain.height + 1 + delta))
    assert_rejects("bad-coinbase", chain.try_connect, block)


def test_invalid_bad_coinbase_fee_nonzero(chain):
    block = chain.build_block(coinbase=replace(chain.coinbase(), fee=1))
    assert_rejects("bad-coinbase", chain.try_connect, block)


def test_invalid_bad_coinbase_zero_outputs(chain):
    block = chain.build_block(coinbase=make_coinbase(chain.height + 1, []))
    assert_rejects("bad-coinbase", chain.try_connect, block)


def test_invalid_bad_coinbase_17_outputs(chain):
    outs = [(bytes([i]) * 32, 1) for i in range(17)]
    block = chain.build_block(coinbase=make_coinbase(chain.height + 1, outs))
    assert_rejects("bad-coinbase", chain.try_connect, block)
    chain.connect(chain.build_block(coinbase=make_coinbase(chain.height + 1, outs[:16])))


def test_invalid_bad_coinbase_via_apply_tx(chain):
    assert_rejects("bad-coinbase", chain.check_tx, chain.coinbase())
    assert_rejects("bad-coinbase", chain.check_tx, make_coinbase(chain.height + 1, [(BOB, 1)]))


# ---- bad-cb-amount ---------------------------------------------------------------------

def test_invalid_bad_cb_amount_one_unit_over(chain):
    block = chain.build_block(coinbase=chain.coinbase(extra=1))
    assert_rejects("bad-cb-amount", chain.try_connect, block)


def test_invalid_bad_cb_amount_with_fees(chain):
    tx = _transfer(chain, fee=25)
    over = chain.build_block([tx], coinbase=chain.coinbase([tx], extra=1))
    assert_rejects("bad-cb-amount", chain.try_connect, over)
    chain.connect(chain.build_block([tx], coinbase=chain.coinbase([tx])))


def test_invalid_bad_cb_amount_split_outputs(chain):
    reward = chain.params.block_reward
    cb = make_coinbase(chain.height + 1, [(MINER, reward), (BOB, 1)])
    assert_rejects("bad-cb-amount", chain.try_connect, chain.build_block(coinbase=cb))


# ---- bad-signature ---------------------------------------------------------------------

def test_invalid_bad_signature_flipped_bit(chain):
    tx = _transfer(chain)
    bad = replace(tx, sig=bytes([tx.sig[0] ^ 1]) + tx.sig[1:])
    assert_rejects("bad-signature", chain.check_tx, bad)
    assert_rejects("bad-signature", chain.try_connect, chain.build_block([bad]))


def test_invalid_bad_signature_other_key(chain):
    tx = _transfer(chain)
    forged = replace(tx, sig=keys.sign(BOB_SEED, tx.signing_message(chain.genesis_hash)))
    assert_rejects("bad-signature", chain.check_tx, forged)


def test_invalid_bad_signature_other_genesis(chain):
    tx = make_transfer(ALICE_SEED, bytes(32), 0, 10, DAVE, 1000)
    assert_rejects("bad-signature", chain.check_tx, tx)


def test_invalid_bad_signature_field_changed_after_signing(chain):
    tx = _transfer(chain, amount=1000)
    for changed in (replace(tx, body=[DAVE, 1001]), replace(tx, fee=tx.fee + 1),
                    replace(tx, body=[CAROL, 1000]), replace(tx, sender=BOB)):
        assert_rejects("bad-signature", chain.check_tx, changed)


def test_invalid_bad_signature_zero_sig_and_non_point_sender(chain):
    tx = _transfer(chain)
    assert_rejects("bad-signature", chain.check_tx, replace(tx, sig=bytes(64)))
    assert_rejects("bad-signature", chain.check_tx, replace(tx, sender=b"\xff" * 32))


def test_invalid_bad_signature_before_bad_nonce(chain):
    tx = _transfer(chain, nonce=5)
    assert_rejects("bad-signature", chain.check_tx, replace(tx, sig=bytes(64)))


def test_invalid_bad_signature_redeem_and_cheat_proof(chain):
    ticket = chain.ticket(bytes(32), 0, 0)
    redeem = make_redeem(BOB_SEED, chain.genesis_hash, 0, [ticket])
    assert_rejects("bad-signature", chain.check_tx, replace(redeem, sender=CAROL))
    proof = make_cheat_proof(BOB_SEED, chain.genesis_hash, 0, ticket, None)
    assert_rejects("bad-signature", chain.check_tx, replace(proof, sig=redeem.sig))


# ---- bad-nonce -------------------------------------------------------------------------

def test_invalid_bad_nonce_transfer_too_low(chain):
    chain.mine([_transfer(chain)])
    assert chain.nonce(ALICE) == 1
    assert_rejects("bad-nonce", chain.check_tx, _transfer(chain, nonce=0))
    assert_rejects("bad-nonce", chain.try_connect, chain.build_block([_transfer(chain, nonce=0)]))


def test_invalid_bad_nonce_transfer_too_high(chain):
    assert_rejects("bad-nonce", chain.check_tx, _transfer(chain, nonce=1))
    assert_rejects("bad-nonce", chain.check_tx, _transfer(chain, nonce=2**63 - 1))


def test_invalid_bad_nonce_transfer_reordered_in_block(chain):
    block = chain.build_block([_transfer(chain, nonce=1), _transfer(chain, nonce=0)])
    assert_rejects("bad-nonce", chain.try_connect, block)


def test_invalid_bad_nonce_escrow_create(chain):
    tx = chain.escrow_tx(ALICE_SEED, [BOB], nonce=1)
    assert_rejects("bad-nonce", chain.check_tx, tx)


@pytest.mark.parametrize("nonce", [1, 7])
def test_invalid_bad_nonce_redeem_nonzero(chain, nonce):
    ticket = chain.ticket(bytes(32), 0, 0)
    tx = sign_tx(BOB_SEED, chain.genesis_hash, REDEEM, nonce, 0, [ticket.encode()])
    assert_rejects("bad-nonce", chain.check_tx, tx)


def test_invalid_bad_nonce_redeem_ignores_account_nonce(chain):
    chain.mine([_transfer(chain, BOB_SEED)])  # BOB's account nonce is now 1
    ticket = chain.ticket(bytes(32), 0, 0)
    tx = sign_tx(BOB_SEED, chain.genesis_hash, REDEEM, 1, 0, [ticket.encode()])
    assert_rejects("bad-nonce", chain.check_tx, tx)
    # with nonce 0 the REDEEM passes the nonce rule and fails later on the escrow
    assert_rejects("unknown-escrow", chain.check_tx,
                   make_redeem(BOB_SEED, chain.genesis_hash, 0, [ticket]))


@pytest.mark.parametrize("nonce", [1, 2**40])
def test_invalid_bad_nonce_cheat_proof_nonzero(chain, nonce):
    ticket = chain.ticket(bytes(32), 0, 10**6)
    tx = sign_tx(BOB_SEED, chain.genesis_hash, CHEAT_PROOF, nonce, 0, [ticket.encode(), None])
    assert_rejects("bad-nonce", chain.check_tx, tx)


def test_invalid_bad_nonce_before_insufficient_funds(chain):
    tx = make_transfer(CAROL_SEED, chain.genesis_hash, 3, 10, DAVE, 1)
    assert_rejects("bad-nonce", chain.check_tx, tx)


# ---- insufficient-funds, bad-amount ----------------------------------------------------

def test_invalid_insufficient_funds_fee(chain):
    _fund(chain, CAROL, 100)
    assert_rejects("insufficient-funds", chain.check_tx,
                   _transfer(chain, CAROL_SEED, amount=1, fee=101))
    # an unknown address has balance 0
    assert_rejects("insufficient-funds", chain.check_tx,
                   make_transfer(b"\x09" * 32, chain.genesis_hash, 0, 1, DAVE, 1))


def test_invalid_insufficient_funds_transfer(chain):
    _fund(chain, CAROL, 100)
    assert_rejects("insufficient-funds", chain.check_tx,
                   _transfer(chain, CAROL_SEED, amount=101, fee=0))
    assert_rejects("insufficient-funds", chain.check_tx,
                   _transfer(chain, CAROL_SEED, amount=100, fee=1))
    assert_rejects("insufficient-funds", chain.check_tx,
                   _transfer(chain, CAROL_SEED, amount=91, fee=10))
    chain.check_tx(_transfer(chain, CAROL_SEED, amount=90, fee=10))


def test_invalid_insufficient_funds_second_transfer_in_block(chain):
    _fund(chain, CAROL, 100)
    first = _transfer(chain, CAROL_SEED, amount=60, fee=0, nonce=0)
    second = _transfer(chain, CAROL_SEED, amount=41, fee=0, nonce=1)
    assert_rejects("insufficient-funds", chain.try_connect, chain.build_block([first, second]))


def test_invalid_insufficient_funds_escrow_amount_penalty_fee(chain):
    tx = chain.escrow_tx(ALICE_SEED, [BOB, CAROL])  # amount 8, least penalty 17
    escrow_amount, penalty = tx.body[0], tx.body[1]
    assert (escrow_amount, penalty) == (8, 17)
    _fund(chain, DAVE, escrow_amount + penalty + 5)
    ok = chain.escrow_tx(DAVE_SEED, [BOB, CAROL], fee=5)
    chain.check_tx(ok)
    too_much_fee = chain.escrow_tx(DAVE_SEED, [BOB, CAROL], fee=6)
    assert_rejects("insufficient-funds", chain.check_tx, too_much_fee)
    too_much_penalty = chain.escrow_tx(DAVE_SEED, [BOB, CAROL], penalty=penalty + 1, fee=5)
    assert_rejects("insufficient-funds", chain.check_tx, too_much_penalty)
    fee_alone = chain.escrow_tx(DAVE_SEED, [BOB, CAROL], fee=escrow_amount + penalty + 6)
    assert_rejects("insufficient-funds", chain.check_tx, fee_alone)


def test_invalid_insufficient_funds_cheat_proof_fee(chain):
    ticket = chain.ticket(bytes(32), 0, 10**6)
    proof = make_cheat_proof(CAROL_SEED, chain.genesis_hash, 1, ticket, None)
    assert_rejects("insufficient-funds", chain.check_tx, proof)
    # with fee 0 the same proof passes the fee rule and fails on the escrow
    proof = make_cheat_proof(CAROL_SEED, chain.genesis_hash, 0, ticket, None)
    assert_rejects("unknown-escrow", chain.check_tx, proof)


def test_invalid_bad_amount_zero(chain):
    assert_rejects("bad-amount", chain.check_tx, _transfer(chain, amount=0))
    assert_rejects("bad-amount", chain.try_connect,
                   chain.build_block([_transfer(chain, amount=0, fee=0)]))


def test_invalid_bad_amount_zero_without_funds_pays_fee_first(chain):
    # SPEC §2 rule 5 (fees) precedes rule 6 (kind rules): a zero-amount transfer whose
    # fee cannot be paid is insufficient-funds; with the fee covered it is bad-amount.
    assert_rejects("insufficient-funds", chain.check_tx,
                   _transfer(chain, CAROL_SEED, amount=0, fee=1))
    assert_rejects("bad-amount", chain.check_tx, _transfer(chain, CAROL_SEED, amount=0, fee=0))


def test_kind_constants_match_spec():
    assert (COINBASE, TRANSFER, REDEEM, CHEAT_PROOF) == (0, 1, 3, 4)


# ---- the signing message of a decoded transaction ---------------------------------------

def test_signing_message_of_decoded_tx_equals_the_built_one_for_every_kind():
    """``Tx.decode`` keeps its bytes and derives the unsigned encoding from them; that
    must be exactly ``packb([version, kind, sender, nonce, fee, body])`` for each kind
    (SPEC §2), big integers and long bodies included."""
    from consensus.channel import sign_voucher
    from consensus.ticket import sign_ticket
    from consensus.tx import (KIND_NAMES, Tx, make_channel_cheat, make_channel_close,
                              make_channel_open, make_escrow_create, make_mp_claim,
                              make_mp_escrow)
    gh, eid, cid = bytes(range(32)), b"\x07" * 32, b"\x09" * 32
    t1, t2 = (sign_ticket(ALICE_SEED, gh, eid, m, 5) for m in (0, 1))
    v1, v2 = (sign_voucher(ALICE_SEED, gh, cid, 3, c) for c in (10, 2**40))
    txs = [make_coinbase(7, [(MINER, 5 * 10**9)]),
           make_transfer(ALICE_SEED, gh, 2**33, 2**20, BOB, 2**63 - 1),
           make_escrow_create(ALICE_SEED, gh, 1, 10, 10**12, 10**9, 1, 100, 1000, 16, 4,
                              [BOB, CAROL, DAVE]),
           make_redeem(BOB_SEED, gh, 3, [sign_ticket(ALICE_SEED, gh, eid, 0, s)
                                         for s in range(256)]),
           make_cheat_proof(CAROL_SEED, gh, 1, t1, t2),
           make_mp_escrow(ALICE_SEED, gh, 4, 1, 10**6, 8, 1000),
           make_mp_claim(BOB_SEED, gh, 1, eid, b"\x01" * 16, b"\x02" * 16, b"\x03" * 64),
           make_channel_open(ALICE_SEED, gh, 5, 1, BOB, 10**6, 10**5, 500),
           make_channel_close(BOB_SEED, gh, 1, cid, v1),
           make_channel_cheat(CAROL_SEED, gh, 1, cid, v1, v2)]
    assert {tx.kind for tx in txs} == set(KIND_NAMES)
    for tx in txs:
        decoded = Tx.decode(tx.encode())
        assert decoded.encode() == tx.encode()
        assert decoded.signing_message(gh) == tx.signing_message(gh), tx.kind
        assert decoded.signing_message(bytes(32)) == tx.signing_message(bytes(32))
