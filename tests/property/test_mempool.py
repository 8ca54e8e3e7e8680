"""Property: after random submit / connect / disconnect sequences the incremental
mempool holds exactly the transactions that are valid in acceptance order on the tip."""

from hypothesis import given, settings, strategies as st

from consensus.errors import ConsensusError
from consensus.state import get_account
from consensus.tx import make_transfer
from consensus.vdf import compute_vdf
from node.mempool import Mempool, PolicyError
from tests.consensus_helpers import ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, DAVE, Chain

SEEDS = [ALICE_SEED, BOB_SEED]
TO = [ALICE, BOB, CAROL, DAVE]

op = st.one_of(
    st.tuples(st.just("tx"), st.integers(0, 1), st.integers(0, 3), st.integers(0, 1),
              st.integers(1, 6 * 10**11), st.integers(0, 3)),
    st.tuples(st.just("mine"), st.integers(200, 3_000)),
    st.tuples(st.just("disconnect")),
    st.tuples(st.just("conflict"), st.integers(0, 1), st.integers(1, 9 * 10**11)),
)


def _next_vdf(chain: Chain) -> bytes:
    return compute_vdf(chain.tip.hash(), chain.params.vdf_iterations,
                       chain.params.vdf_checkpoints)[0]


def _reset(pool: Mempool, chain: Chain, **kw) -> None:
    pool.reset(chain.state, chain.height, _next_vdf(chain), **kw)


@settings(max_examples=40, deadline=None)
@given(st.lists(op, min_size=1, max_size=25))
def test_incremental_pool_equals_valid_set(ops):
    chain = Chain()
    pool = Mempool(chain.params, chain.genesis_hash)
    _reset(pool, chain)
    submitted = {}
    for o in ops:
        if o[0] == "tx":
            _, s, to, ahead, amount, fee = o
            sender_nonce = get_account(pool.view, make_transfer(SEEDS[s], chain.genesis_hash,
                                                                0, 0, TO[to], 1).sender).nonce
            tx = make_transfer(SEEDS[s], chain.genesis_hash, sender_nonce + ahead, fee * 100,
                               TO[to], amount)
            submitted[tx.txid()] = tx
            try:
                pool.add(tx)
            except (ConsensusError, PolicyError):
                pass
        elif o[0] == "mine":
            txs = pool.select(o[1])
            chain.mine(txs)
            _reset(pool, chain, confirmed={t.txid() for t in txs},
                   written=set(chain.last_changes))
        elif o[0] == "conflict":  # a block with a tx the pool never saw (a double spend)
            seed = SEEDS[o[1]]
            sender = make_transfer(seed, chain.genesis_hash, 0, 0, CAROL, 1).sender
            tx = make_transfer(seed, chain.genesis_hash, chain.nonce(sender), 0, DAVE, o[2])
            try:
                chain.check_tx(tx)
            except ConsensusError:
                continue
            chain.mine([tx])
            _reset(pool, chain, confirmed={tx.txid()}, written=set(chain.last_changes))
        elif chain.height > 0:
            block = chain.disconnect()
            _reset(pool, chain, readd=list(block.txs[1:]))
    confirmed = {t.txid() for b in chain.blocks for t in b.txs}
    # every pooled tx is valid in acceptance order on the tip ...
    ref = Mempool(chain.params, chain.genesis_hash)
    _reset(ref, chain)
    for txid in pool.txids():
        ref.add(pool.get(txid))
        assert txid in ref
    # ... and nothing that was dropped would be valid on top of them
    for txid, tx in submitted.items():
        if txid in confirmed or txid in pool or (tx.sender, tx.nonce) in pool.waiting:
            continue
        try:
            ref.add(tx)
        except (ConsensusError, PolicyError):
            continue
        assert txid not in ref, "a valid transaction was dropped"
