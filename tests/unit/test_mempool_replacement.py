"""Mempool replace-by-fee for nonce-0 claims (node.replacement, DESIGN "Replace-by-fee and
escrow roll-over"): a REDEEM replacing a pooled REDEEM of the same tickets, a CHANNEL_CHEAT
replacing a pooled CHANNEL_CLOSE of the same channel, and the refusals."""

import pytest

from consensus.channel import compute_channel_id, sign_voucher
from consensus.errors import ConsensusError
from consensus.state import iter_redeemed
from consensus.tx import make_channel_cheat, make_channel_close, make_channel_open, make_transfer
from consensus.vdf import compute_vdf
from node.mempool import Mempool, PolicyError
from node.replacement import INCREMENTAL_FEERATE, MAX_CONFLICTS
from tests.consensus_helpers import ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, CAROL_SEED, Chain

BETA = 10**6


def _pool(chain: Chain, **kw) -> Mempool:
    pool = Mempool(chain.params, chain.genesis_hash, **kw)
    vdf = compute_vdf(chain.tip.hash(), chain.params.vdf_iterations,
                      chain.params.vdf_checkpoints)[0]
    pool.reset(chain.state, chain.height, vdf)
    return pool


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


@pytest.fixture
def redeemable(chain):
    """An escrow (merchants BOB, CAROL; beta 10^6) mined to its first redeemable block;
    ``(escrow_id, two winning seqnos of group 0)``."""
    eid = chain.create_escrow(ALICE_SEED, [BOB, CAROL], beta=BETA, tkt_rate=4)
    chain.mine_to_redeemable(eid, 0)
    winners = chain.winners(eid, 0)
    assert len(winners) >= 2
    return eid, winners[:2]


def _size(tx) -> int:
    return len(tx.encode())


def test_higher_fee_redeem_replaces_the_pooled_one(chain, redeemable):
    eid, (s1, s2) = redeemable
    pool = _pool(chain)
    old = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=0)
    pool.add(old)
    new = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=4 * _size(old))
    pool.add(new)
    assert new.txid() in pool and old.txid() not in pool
    assert pool.select(10**6) == [new]
    # ... and a replacement of the replacement must beat it again
    newer = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=new.fee + 1)
    with pytest.raises(PolicyError, match="insufficient-fee"):
        pool.add(newer)
    assert new.txid() in pool


def test_replacement_may_cover_more_tickets_and_several_redeems(chain, redeemable):
    eid, (s1, s2) = redeemable
    pool = _pool(chain)
    a = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=100)
    b = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s2)], fee=100)
    pool.add(a)
    pool.add(b)
    both = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1), chain.ticket(eid, 0, s2)],
                        fee=200 + 2 * 400)
    pool.add(both)
    assert list(pool.entries) == [both.txid()]
    chain.mine(pool.select(10**6))  # the template is valid on chain
    assert sorted(s for s, _, _ in iter_redeemed(chain.state, eid)) == sorted([s1, s2])


def test_fee_rule_refusals_leave_the_pool_as_it_was(chain, redeemable):
    eid, (s1, _) = redeemable
    pool = _pool(chain)
    old = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=1_000)
    pool.add(old)
    for fee in (0, 999, 1_000 + INCREMENTAL_FEERATE * _size(old) - 1):
        with pytest.raises(PolicyError, match="insufficient-fee"):
            pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=fee))
    assert list(pool.entries) == [old.txid()]
    # a replacement above the payout is a consensus reject, and the old one stays
    with pytest.raises(ConsensusError, match="fee-exceeds-payout"):
        pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=BETA + 1))
    assert list(pool.entries) == [old.txid()]


def test_other_merchants_redeem_of_the_seqno_is_no_conflict(chain, redeemable):
    """CAROL redeeming BOB's seqno is a duplicate (SPEC §7 step 4), not a replacement."""
    eid, (s1, _) = redeemable
    pool = _pool(chain)
    pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=0))
    dup = chain.redeem(CAROL_SEED, [chain.ticket(eid, 1, s1)], fee=0)
    pool.add(dup)
    assert len(pool) == 2


def test_already_redeemed_on_chain_is_still_rejected(chain, redeemable):
    eid, (s1, _) = redeemable
    chain.mine([chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)])])
    pool = _pool(chain)
    with pytest.raises(ConsensusError, match="ticket-already-redeemed"):
        pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=10_000))


def test_too_many_conflicts(chain, redeemable, monkeypatch):
    eid, (s1, s2) = redeemable
    monkeypatch.setattr("node.replacement.MAX_CONFLICTS", 1)
    pool = _pool(chain)
    pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)]))
    pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s2)]))
    with pytest.raises(PolicyError, match="too-many-replacements"):
        pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1), chain.ticket(eid, 0, s2)],
                              fee=100_000))
    assert len(pool) == 2 and MAX_CONFLICTS >= 100


def test_replacement_keeps_independent_entries(chain, redeemable):
    eid, (s1, s2) = redeemable
    pool = _pool(chain)
    transfer = make_transfer(ALICE_SEED, chain.genesis_hash, chain.nonce(ALICE), 5, CAROL, 7)
    pool.add(transfer)
    pool.add(chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)]))
    other = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s2)])
    pool.add(other)
    new = chain.redeem(BOB_SEED, [chain.ticket(eid, 0, s1)], fee=1_000)
    pool.add(new)
    assert set(pool.entries) == {transfer.txid(), other.txid(), new.txid()}
    chain.mine(pool.select(10**6))


# ---- channels: a CHANNEL_CHEAT replaces the payee's pooled CHANNEL_CLOSE ----------------

DEPOSIT, PENALTY = 100_000, 30_000


def _channel(chain) -> bytes:
    tx = make_channel_open(ALICE_SEED, chain.genesis_hash, chain.nonce(ALICE), 0, BOB,
                           DEPOSIT, PENALTY, chain.height + 20)
    chain.mine([tx])
    return compute_channel_id(tx.txid())


def test_channel_cheat_replaces_pooled_close(chain):
    cid = _channel(chain)
    v = lambda k, c: sign_voucher(ALICE_SEED, chain.genesis_hash, cid, k, c)  # noqa: E731
    pool = _pool(chain)
    close = make_channel_close(BOB_SEED, chain.genesis_hash, 0, cid, v(3, 500))
    pool.add(close)
    # the payer equivocates after the close was pooled
    cheap = make_channel_cheat(BOB_SEED, chain.genesis_hash, 0, cid, v(3, 500), v(3, 900))
    with pytest.raises(PolicyError, match="insufficient-fee"):
        pool.add(cheap)
    cheat = make_channel_cheat(BOB_SEED, chain.genesis_hash, 2 * _size(cheap), cid,
                               v(3, 500), v(3, 900))
    pool.add(cheat)
    assert list(pool.entries) == [cheat.txid()]
    before = chain.balance(BOB)
    chain.mine(pool.select(10**6))
    assert chain.balance(BOB) == before + DEPOSIT + PENALTY - cheat.fee


def test_channel_claim_of_another_sender_is_no_replacement(chain):
    cid = _channel(chain)
    pool = _pool(chain)
    pool.add(make_channel_close(BOB_SEED, chain.genesis_hash, 0, cid,
                                sign_voucher(ALICE_SEED, chain.genesis_hash, cid, 1, 10)))
    stranger = make_channel_close(CAROL_SEED, chain.genesis_hash, 10_000, cid,
                                  sign_voucher(ALICE_SEED, chain.genesis_hash, cid, 1, 10))
    with pytest.raises(ConsensusError, match="unknown-channel"):
        pool.add(stranger)
    assert len(pool) == 1
