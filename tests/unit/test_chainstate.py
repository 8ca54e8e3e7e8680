"""ChainState.add_block: the node's one block pipeline over a real LevelDB store."""

from dataclasses import replace

from consensus.block import Block, Header, compute_tx_root, is_pow_valid
from consensus.tx import make_coinbase
from consensus.vdf import compute_vdf
from node.chainstate import ChainState
from node.store import ChainStore
from p2p.interface import BlockStatus
from tests.consensus_helpers import GENESIS_TIME, MINER, regtest_params

PARAMS = regtest_params()


def block_on(parent: Header, *, extra: int = 0, **fields) -> Block:
    height = parent.height + 1
    cb = make_coinbase(height, [(MINER, PARAMS.block_reward - extra)])
    vdf, cps = compute_vdf(parent.hash(), PARAMS.vdf_iterations, PARAMS.vdf_checkpoints)
    header = Header(1, height, parent.hash(), GENESIS_TIME + height, PARAMS.genesis_target, 0,
                    compute_tx_root([cb.txid()]), vdf, tuple(cps))
    header = replace(header, **fields)
    while not is_pow_valid(header.hash(), header.target):
        header = replace(header, nonce=header.nonce + 1)
    return Block(header, (cb,))


def test_connect_reorg_and_results(tmp_path):
    chain = ChainState(PARAMS, ChainStore(tmp_path / "s"))
    a1 = block_on(chain.genesis.header)
    a2 = block_on(a1.header)
    assert chain.add_block(a1.encode())[0].status is BlockStatus.CONNECTED
    assert chain.add_block(a2.encode())[0].status is BlockStatus.CONNECTED
    assert chain.add_block(a2.encode())[0].status is BlockStatus.KNOWN
    b1 = block_on(chain.genesis.header, extra=1)
    b2 = block_on(b1.header)
    b3 = block_on(b2.header)
    assert chain.add_block(b1.encode())[0].status is BlockStatus.SIDE
    assert chain.add_block(b2.encode())[0].status is BlockStatus.SIDE  # tie keeps the tip
    result, change = chain.add_block(b3.encode())
    assert result.status is BlockStatus.CONNECTED
    assert [b.hash() for b in change.disconnected] == [a2.hash(), a1.hash()]
    assert [b.hash() for b in change.connected] == [b1.hash(), b2.hash(), b3.hash()]
    assert chain.get_headers_after([chain.genesis_hash], bytes(32), 10) == [
        b.header.encode() for b in (b1, b2, b3)]
    assert chain.store.get_block(b3.hash()) == b3.encode()
    chain.store.close()


def test_invalid_vdf_marks_block_and_descendants(tmp_path):
    chain = ChainState(PARAMS, ChainStore(tmp_path / "s"))
    bad = block_on(chain.genesis.header, vdf=bytes(32))
    result, _ = chain.add_block(bad.encode())
    assert (result.status, result.reason) == (BlockStatus.INVALID, "bad-vdf")
    child = block_on(bad.header)
    result, _ = chain.add_block(child.encode())
    assert (result.status, result.reason) == (BlockStatus.INVALID, "bad-prevblk")
    chain.store.close()


def test_time_too_new_is_not_yet_and_not_cached(tmp_path):
    now = [GENESIS_TIME]
    chain = ChainState(PARAMS, ChainStore(tmp_path / "s"), clock=lambda: now[0])
    early = block_on(chain.genesis.header, timestamp=GENESIS_TIME + 10_000)
    result, _ = chain.add_block(early.encode())
    assert (result.status, result.reason) == (BlockStatus.NOT_YET, "time-too-new")
    now[0] = GENESIS_TIME + 10_000
    assert chain.add_block(early.encode())[0].status is BlockStatus.CONNECTED
    chain.store.close()


def test_restart_resumes_tip(tmp_path):
    chain = ChainState(PARAMS, ChainStore(tmp_path / "s"))
    blocks = [block_on(chain.genesis.header)]
    for _ in range(20):
        blocks.append(block_on(blocks[-1].header))
    for b in blocks:
        chain.add_block(b.encode())
    chain.store.close()
    again = ChainState(PARAMS, ChainStore(tmp_path / "s"))
    assert again.tip.hash == blocks[-1].hash()
    assert again.tip.get_ancestor(5).hash == blocks[4].hash()
    again.store.close()
