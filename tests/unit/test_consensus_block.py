"""Block rules (SPEC §5, §10): header checks, PoW, VDF, tx_root, size, targets, time."""

from dataclasses import replace

import pytest
from blake3 import blake3

from consensus.block import (Block, compute_median_time_past, compute_next_target,
                             compute_tx_root, compute_work, is_pow_valid, make_genesis)
from consensus.errors import ConsensusError
from consensus.hashing import ZERO_HASH, tagged_hash
from consensus.params import DEVNET, PAPER, REGTEST
from consensus.state import MemoryState, compute_money_total, get_issued
from consensus.ticket import sign_ticket
from consensus.transition import apply_genesis
from consensus.tx import make_redeem, make_transfer
from consensus.vdf import compute_vdf, iterate_hash, verify_vdf
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, GENESIS_TIME, Chain,
                                     assert_rejects, regtest_params)


@pytest.fixture
def chain() -> Chain:
    c = Chain()
    c.mine()
    return c


def _transfer(chain, nonce=None, amount=5):
    return make_transfer(ALICE_SEED, chain.genesis_hash,
                         chain.nonce(ALICE) if nonce is None else nonce, 1, BOB, amount)


# ---- header fields ---------------------------------------------------------------------

def test_valid_block_connects(chain):
    block = chain.build_block([_transfer(chain)])
    assert Block.decode(block.encode()) == block
    chain.connect(block)
    assert chain.height == 2


def test_invalid_bad_prevblk(chain):
    for prev in (ZERO_HASH, chain.genesis_hash, b"\x01" * 32):
        assert_rejects("bad-prevblk", chain.try_connect, chain.build_block(prev_hash=prev))


@pytest.mark.parametrize("delta", [-1, 0, 2, 1000])
def test_invalid_bad_height(chain, delta):
    block = chain.build_block(height=chain.height + delta,
                              coinbase=chain.coinbase(height=chain.height + delta))
    assert_rejects("bad-height", chain.try_connect, block)


@pytest.mark.parametrize("target", [REGTEST.genesis_target - 1, REGTEST.genesis_target // 2,
                                    2**256 - 1])
def test_invalid_bad_diffbits(chain, target):
    assert_rejects("bad-diffbits", chain.try_connect, chain.build_block(target=target))


def test_invalid_bad_version_block(chain):
    assert_rejects("bad-version", chain.try_connect, chain.build_block(version=2))


def test_invalid_time_too_old_equal_to_median(chain):
    chain.mine_to(12)
    ctx = chain.header_context()
    times = [b.header.timestamp for b in chain.blocks[-11:]]
    assert ctx.median_time_past == sorted(times)[5]
    block = chain.build_block(timestamp=ctx.median_time_past)
    assert_rejects("time-too-old", chain.try_connect, block)
    assert_rejects("time-too-old", chain.try_connect,
                   chain.build_block(timestamp=ctx.median_time_past - 100))
    # one second past the median is fine, though older than the parent
    ok = chain.build_block(timestamp=ctx.median_time_past + 1)
    assert ok.header.timestamp < chain.tip.header.timestamp
    chain.connect(ok)


def test_invalid_time_too_old_first_blocks(chain):
    # block 2: median of the previous two timestamps is the lower (index (2-1)//2 = 0)
    ctx = chain.header_context()
    assert ctx.median_time_past == GENESIS_TIME
    assert_rejects("time-too-old", chain.try_connect, chain.build_block(timestamp=GENESIS_TIME))
    chain.connect(chain.build_block(timestamp=GENESIS_TIME + 1))  # equal to the parent's


def test_invalid_time_too_new(chain):
    now = GENESIS_TIME + 50
    limit = now + REGTEST.max_future_time
    assert_rejects("time-too-new", chain.try_connect, chain.build_block(timestamp=limit + 1),
                   now=now)
    chain.connect(chain.build_block(timestamp=limit), now=now)


def test_invalid_high_hash(chain):
    block = chain.build_block(pow_valid=False)
    assert int.from_bytes(block.hash(), "big") > block.header.target
    assert_rejects("high-hash", chain.try_connect, block)


def test_pow_boundary_and_work():
    h = (12345).to_bytes(32, "big")
    assert is_pow_valid(h, 12345)
    assert not is_pow_valid(h, 12344)
    assert compute_work(2**256 - 1) == 1
    assert compute_work(2**255 - 1) == 2
    assert compute_work(2**240 - 1) == 2**16


# ---- VDF, tx_root, duplicates, size ----------------------------------------------------

def test_invalid_bad_vdf_wrong_value(chain):
    good = chain.build_block()
    assert_rejects("bad-vdf", chain.try_connect, chain.build_block(vdf=b"\x00" * 32))
    assert_rejects("bad-vdf", chain.try_connect,
                   chain.build_block(vdf=bytes([good.header.vdf[0] ^ 1]) + good.header.vdf[1:]))
    # the VDF of the grandparent, not the parent
    assert_rejects("bad-vdf", chain.try_connect, chain.build_block(vdf=chain.tip.header.vdf))


def test_invalid_bad_vdf_checkpoint(chain):
    good = chain.build_block()
    (cp,) = good.header.vdf_checkpoints
    tampered = (bytes([cp[0] ^ 0x80]) + cp[1:],)
    assert_rejects("bad-vdf", chain.try_connect, chain.build_block(vdf_checkpoints=tampered))


@pytest.mark.parametrize("count", [0, 2, 3])
def test_invalid_bad_vdf_checkpoint_count(chain, count):
    good = chain.build_block()
    cps = (good.header.vdf_checkpoints * 3)[:count]
    assert_rejects("bad-vdf", chain.try_connect, chain.build_block(vdf_checkpoints=cps))


def test_invalid_bad_txnmrklroot(chain):
    tx = _transfer(chain)
    good = chain.build_block([tx])
    assert_rejects("bad-txnmrklroot", chain.try_connect,
                   chain.build_block([tx], tx_root=ZERO_HASH))
    assert_rejects("bad-txnmrklroot", chain.try_connect,
                   chain.build_block([tx], tx_root=good.txs[1].txid()))
    # the right root for other transactions
    swapped = Block(good.header, (good.txs[0], _transfer(chain, amount=6)))
    assert_rejects("bad-txnmrklroot", chain.try_connect, swapped)


def test_invalid_bad_txns_duplicate(chain):
    tx = _transfer(chain)
    cb = chain.coinbase([tx, tx])
    block = chain.build_block(all_txs=(cb, tx, tx))
    assert block.header.tx_root == compute_tx_root([cb.txid(), tx.txid(), tx.txid()])
    assert_rejects("bad-txns-duplicate", chain.try_connect, block)


def test_invalid_bad_txns_duplicate_coinbase(chain):
    cb = chain.coinbase()
    assert_rejects("bad-txns-duplicate", chain.try_connect, chain.build_block(all_txs=(cb, cb)))


def test_invalid_bad_blk_length(chain):
    ticket = sign_ticket(ALICE_SEED, chain.genesis_hash, b"\x05" * 32, 0, 0)
    big = make_redeem(BOB_SEED, chain.genesis_hash, 0, [ticket] * 256)
    copies = REGTEST.max_block_bytes // len(big.encode()) + 1
    block = chain.build_block(all_txs=(chain.coinbase(),) + (big,) * copies)
    assert len(block.encode()) > REGTEST.max_block_bytes
    assert_rejects("bad-blk-length", chain.try_connect, block)


def test_invalid_bad_blk_length_boundary(chain):
    block = chain.build_block([_transfer(chain)])
    size = len(block.encode())
    chain.try_connect(block, params=replace(chain.params, max_block_bytes=size))
    assert_rejects("bad-blk-length", chain.try_connect, block,
                   params=replace(chain.params, max_block_bytes=size - 1))


# ---- order of checks (SPEC §10) --------------------------------------------------------

def test_order_pow_before_vdf_before_root_before_txs(chain):
    bad_tx = _transfer(chain, nonce=9)
    assert_rejects("high-hash", chain.try_connect,
                   chain.build_block([bad_tx], vdf=ZERO_HASH, tx_root=ZERO_HASH, pow_valid=False))
    assert_rejects("bad-vdf", chain.try_connect,
                   chain.build_block([bad_tx], vdf=ZERO_HASH, tx_root=ZERO_HASH))
    assert_rejects("bad-txnmrklroot", chain.try_connect,
                   chain.build_block([bad_tx], tx_root=ZERO_HASH))
    assert_rejects("bad-nonce", chain.try_connect, chain.build_block([bad_tx]))


def test_order_header_fields_before_pow(chain):
    assert_rejects("bad-height", chain.try_connect,
                   chain.build_block(height=5, pow_valid=False))
    assert_rejects("time-too-old", chain.try_connect,
                   chain.build_block(timestamp=GENESIS_TIME, pow_valid=False))


def test_order_size_checked_first(chain):
    # SPEC §10 "Order of checks: size, header fields ...": an oversize block with a bad
    # parent (and no valid PoW) is bad-blk-length
    ticket = sign_ticket(ALICE_SEED, chain.genesis_hash, b"\x05" * 32, 0, 0)
    big = make_redeem(BOB_SEED, chain.genesis_hash, 0, [ticket] * 256)
    copies = REGTEST.max_block_bytes // len(big.encode()) + 1
    block = chain.build_block(all_txs=(chain.coinbase(),) + (big,) * copies,
                              prev_hash=b"\x01" * 32, pow_valid=False)
    assert_rejects("bad-blk-length", chain.try_connect, block)


def test_failed_block_leaves_state_untouched(chain):
    before = dict(chain.state.items)
    block = chain.build_block([_transfer(chain), _transfer(chain, nonce=7)])
    assert_rejects("bad-nonce", chain.try_connect, block)
    assert chain.state.items == before


# ---- targets (SPEC §10 "Target") -------------------------------------------------------

def _times(values):
    return lambda h: values[h]


def test_next_target_no_retarget_profile():
    for h in (1, 10, 60, 12345):
        assert compute_next_target(REGTEST, h, 123, _times({})) == REGTEST.genesis_target


@pytest.mark.parametrize("height", [1, 5, 9, 11, 19, 21])
def test_next_target_keeps_parent_between_retargets(height):
    assert compute_next_target(DEVNET, height, 2**200, _times({})) == 2**200


def test_next_target_exact_span_keeps_target():
    expected = (DEVNET.retarget_interval - 1) * DEVNET.block_time
    assert expected == 18
    ts = {0: 1000, 9: 1000 + expected}
    assert compute_next_target(DEVNET, 10, 2**200, _times(ts)) == 2**200


def test_next_target_uses_window_of_this_interval():
    ts = {10: 5000, 19: 5036}  # twice the expected span: the target doubles
    assert compute_next_target(DEVNET, 20, 2**200, _times(ts)) == 2**201
    ts = {10: 5000, 19: 5009}
    assert compute_next_target(DEVNET, 20, 2**200, _times(ts)) == 2**199


def test_next_target_clamped_up():
    parent = 3 * 2**200 + 7
    slow = {0: 1000, 9: 1000 + 18 * 4}
    very_slow = {0: 1000, 9: 1000 + 10**6}
    assert compute_next_target(DEVNET, 10, parent, _times(slow)) == parent * 72 // 18
    assert compute_next_target(DEVNET, 10, parent, _times(very_slow)) == parent * 72 // 18


def test_next_target_clamped_down():
    parent = 3 * 2**200 + 7
    lower = 18 // 4  # integer division: 4, not 4.5
    for span in (lower, 3, 1, 0, -500):
        ts = {0: 1000, 9: 1000 + span}
        assert compute_next_target(DEVNET, 10, parent, _times(ts)) == parent * lower // 18
    ts = {0: 1000, 9: 1000 + 5}
    assert compute_next_target(DEVNET, 10, parent, _times(ts)) == parent * 5 // 18


def test_next_target_capped_at_pow_limit():
    ts = {0: 1000, 9: 1000 + 72}
    assert compute_next_target(DEVNET, 10, DEVNET.pow_limit, _times(ts)) == DEVNET.pow_limit
    assert compute_next_target(DEVNET, 10, 2**247, _times(ts)) == DEVNET.pow_limit
    assert compute_next_target(DEVNET, 10, 2**245, _times(ts)) == 2**247


def test_next_target_paper_profile():
    expected = 59 * 60
    ts = {0: 0, 59: 2 * expected}
    assert compute_next_target(PAPER, 60, 2**220, _times(ts)) == 2**221
    assert compute_next_target(PAPER, 30, 2**220, _times({})) == 2**220


def test_invalid_bad_diffbits_after_retarget():
    params = replace(regtest_params(), retarget_interval=4, pow_limit=2**255 - 1,
                     genesis_target=2**254)
    chain = Chain(params)
    chain.mine_to(3)
    # blocks one second apart, expected span 3: unchanged target at height 4
    ctx = chain.header_context()
    assert ctx.expected_target == 2**254
    for i in range(4):
        chain.mine(timestamp=chain.tip.header.timestamp + 3)
    # window ts(7) - ts(4) = 9 = 3 * expected: the target triples, capped at pow_limit
    ctx = chain.header_context()
    assert ctx.expected_target == min(params.pow_limit, 2**254 * 9 // 3)
    assert_rejects("bad-diffbits", chain.try_connect, chain.build_block(target=2**254))
    chain.mine()


# ---- median time past ------------------------------------------------------------------

def test_median_time_past_index_rule():
    assert compute_median_time_past([7]) == 7
    assert compute_median_time_past([9, 3]) == 3            # n=2: index 0
    assert compute_median_time_past([5, 1, 9]) == 5         # n=3: index 1
    assert compute_median_time_past([4, 8, 1, 6]) == 4      # n=4: index 1 of [1,4,6,8]
    eleven = [50, 10, 90, 20, 80, 30, 70, 40, 60, 100, 0]
    assert compute_median_time_past(eleven) == 50           # n=11: index 5
    assert compute_median_time_past([3, 3, 1, 3]) == 3


# ---- tx_root by hand -------------------------------------------------------------------

def _leaves(n):
    return [bytes([i + 1]) * 32 for i in range(n)]


def _node(left, right):
    return tagged_hash(b"node", left + right)


def test_tx_root_one_leaf():
    (a,) = _leaves(1)
    assert compute_tx_root([a]) == a


def test_tx_root_two_leaves():
    a, b = _leaves(2)
    assert compute_tx_root([a, b]) == _node(a, b)
    assert compute_tx_root([b, a]) != compute_tx_root([a, b])


def test_tx_root_three_leaves():
    a, b, c = _leaves(3)
    assert compute_tx_root([a, b, c]) == _node(_node(a, b), c)


def test_tx_root_five_leaves():
    a, b, c, d, e = _leaves(5)
    assert compute_tx_root([a, b, c, d, e]) == _node(_node(_node(a, b), _node(c, d)), e)


def test_tx_root_node_hash_definition():
    a, b = _leaves(2)
    assert _node(a, b) == blake3(bytes([4]) + b"node" + a + b).digest()


# ---- VDF checkpoints (SPEC §5) -----------------------------------------------------------

BH = b"\x42" * 32


def test_vdf_definition():
    x = blake3(bytes([3]) + b"vdf" + BH).digest()
    points = []
    for i in range(1, 41):
        x = blake3(x).digest()
        if i % 10 == 0:
            points.append(x)
    vdf, cps = compute_vdf(BH, 40, 4)
    assert vdf == points[-1]
    assert cps == points[:-1]
    assert iterate_hash(tagged_hash(b"vdf", BH), 40) == vdf


def test_vdf_verify_accepts():
    vdf, cps = compute_vdf(BH, 40, 4)
    verify_vdf(BH, vdf, cps, 40, 4)
    vdf, cps = compute_vdf(BH, REGTEST.vdf_iterations, REGTEST.vdf_checkpoints)
    assert len(cps) == REGTEST.vdf_checkpoints - 1
    verify_vdf(BH, vdf, cps, REGTEST.vdf_iterations, REGTEST.vdf_checkpoints)


@pytest.mark.parametrize("segment", [0, 1, 2, 3])
def test_invalid_bad_vdf_each_segment(segment):
    vdf, cps = compute_vdf(BH, 40, 4)
    points = cps + [vdf]
    points[segment] = bytes([points[segment][0] ^ 1]) + points[segment][1:]
    with pytest.raises(ConsensusError) as info:
        verify_vdf(BH, points[-1], points[:-1], 40, 4)
    assert info.value.reason == "bad-vdf"


def test_invalid_bad_vdf_consistent_but_shifted_segment():
    # a checkpoint that is a real chain value, but of the wrong step
    vdf, cps = compute_vdf(BH, 40, 4)
    x1 = iterate_hash(tagged_hash(b"vdf", BH), 11)
    assert_rejects("bad-vdf", verify_vdf, BH, vdf, [x1] + cps[1:], 40, 4)
    assert_rejects("bad-vdf", verify_vdf, b"\x43" * 32, vdf, cps, 40, 4)
    assert_rejects("bad-vdf", verify_vdf, BH, vdf, cps[:-1], 40, 4)
    assert_rejects("bad-vdf", verify_vdf, BH, vdf, cps + [vdf], 40, 4)


def test_vdf_checkpoints_must_divide():
    with pytest.raises(ValueError):
        compute_vdf(BH, 10, 3)


# ---- genesis ---------------------------------------------------------------------------

def test_genesis_block_fields_and_large_premine():
    premine = [(bytes([i + 1]) * 32, 1000 + i) for i in range(20)]  # exempt from 16 outputs
    params = REGTEST.with_genesis(GENESIS_TIME, premine)
    g = make_genesis(params)
    h = g.header
    assert (h.version, h.height, h.prev_hash, h.timestamp, h.target, h.nonce, h.vdf,
            h.vdf_checkpoints) == (1, 0, ZERO_HASH, GENESIS_TIME, params.genesis_target, 0,
                                   ZERO_HASH, ())
    assert h.tx_root == g.txs[0].txid()
    assert g.txs[0].nonce == 0
    assert Block.decode(g.encode()) == g
    state = MemoryState()
    apply_genesis(params, state, g)
    assert get_issued(state) == sum(a for _, a in premine) == compute_money_total(state)
    assert make_genesis(params).hash() == g.hash()
    assert make_genesis(REGTEST.with_genesis(GENESIS_TIME + 1, premine)).hash() != g.hash()


def test_first_block_carries_vdf_of_genesis():
    chain = Chain()
    block = chain.mine()
    vdf, cps = compute_vdf(chain.genesis_hash, REGTEST.vdf_iterations, REGTEST.vdf_checkpoints)
    assert block.header.vdf == vdf
    assert list(block.header.vdf_checkpoints) == cps

