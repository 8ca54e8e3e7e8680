"""The push and fee RPCs (issue 8 points 3 and 6): ``TipWatch``, ``EscrowIndex``, the fee
estimator, and the methods themselves on a real (not running) ``Node`` over a LevelDB store
in a temp dir, called through the JSON-RPC dispatcher."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from consensus.address import encode_address
from consensus.escrow import compute_escrow_id, compute_min_penalty
from consensus.keys import public_key
from consensus.params import get_params
from consensus.state import MemoryState, credit, delete_escrow, get_escrow
from consensus.ticket import Ticket
from consensus.transition import TxContext, process_escrow_create
from consensus.tx import make_escrow_create, make_redeem, make_transfer
from node.escrowindex import EscrowIndex
from node.feeestimate import (BlockFees, FeeEstimator, admission_feerate, blocks_feerate,
                              mempool_feerate, redeem_sizes)
from node.jsonrpc import Dispatcher
from node.tipwatch import MAX_WAIT_SECONDS, TipWatch

pytestmark = pytest.mark.timeout(60)

SEED = bytes(range(32))
H = [bytes([i]) * 32 for i in range(10)]


# ---- TipWatch ---------------------------------------------------------------------------

def test_tipwatch_wakes_waiters_on_notify():
    async def main():
        watch = TipWatch(H[0], 0)
        got = []

        async def waiter():
            got.append(await watch.wait_for(lambda h, _: h != H[0], 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            watch.notify(H[1], 1)
        assert got == [(H[1], 1), (H[1], 1)]
    trio.run(main)


def test_tipwatch_height_predicate_survives_several_notifies():
    async def main():
        watch = TipWatch(H[0], 0)
        result = []

        async def waiter():
            result.append(await watch.wait_for(lambda _, t: t >= 3, 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            for height in (1, 2, 3):
                await trio.testing.wait_all_tasks_blocked()
                assert not result
                watch.notify(H[height], height)
        assert result == [(H[3], 3)]
    trio.run(main)


def test_tipwatch_timeout_returns_current_tip_and_zero_is_capped():
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main():
        watch = TipWatch(H[2], 2)
        began = trio.current_time()
        assert await watch.wait_for(lambda _, t: t >= 9, 1.5) == (H[2], 2)
        assert trio.current_time() - began == pytest.approx(1.5)
        began = trio.current_time()
        assert await watch.wait_for(lambda _, t: t >= 9, 0) == (H[2], 2)
        assert trio.current_time() - began == pytest.approx(MAX_WAIT_SECONDS)
        assert await watch.wait_for(lambda _, t: t >= 2, 5) == (H[2], 2)  # already true
    trio.run(main, clock=clock)


# ---- EscrowIndex --------------------------------------------------------------------------

PARAMS = get_params("regtest")


def escrow_tx(owner_seed: bytes, nonce: int, merchants: list[bytes]):
    penalty = compute_min_penalty(PARAMS, len(merchants), 1, 2, 1000, 2, 1)
    return make_escrow_create(owner_seed, H[9], nonce, 0, 2000, penalty, 1, 2, 1000, 2, 1,
                              merchants)


class FakeChain:
    """Main-chain hashes and blocks holding ESCROW_CREATEs applied to a MemoryState."""

    def __init__(self) -> None:
        self.state = MemoryState()
        self.main = [H[0]]
        self.blocks = {H[0]: SimpleNamespace(txs=[])}

    def connect(self, block_hash: bytes, txs) -> list[bytes]:
        ids = []
        for tx in txs:
            credit(self.state, tx.sender, 10**9)
            ctx = TxContext(PARAMS, H[9], len(self.main), block_hash)
            ids.append(process_escrow_create(ctx, self.state, tx))
        self.main.append(block_hash)
        self.blocks[block_hash] = SimpleNamespace(txs=list(txs))
        return ids

    def sync(self, index: EscrowIndex) -> None:
        index.sync(self.main, self.blocks.__getitem__, self.state)


def test_escrow_index_catches_up_block_by_block_and_drops_refunded():
    chain, index = FakeChain(), EscrowIndex()
    a, b = public_key(H[1]), public_key(H[2])
    m1, m2 = public_key(H[3]), public_key(H[4])
    (e1,) = chain.connect(H[5], [escrow_tx(H[1], 0, [m1, m2])])
    chain.sync(index)
    assert index.rebuilds == 1
    e2, e3 = chain.connect(H[6], [escrow_tx(H[1], 1, [m2]), escrow_tx(H[2], 0, [m1])])
    chain.sync(index)
    assert index.rebuilds == 1  # caught up from the block, no scan
    assert [i for i, _ in index.lookup(chain.state, owner=a)] == [e1, e2]
    assert [i for i, _ in index.lookup(chain.state, owner=b)] == [e3]
    assert {i for i, _ in index.lookup(chain.state, merchant=m1)} == {e1, e3}
    assert index.lookup(chain.state, merchant=m2)[0][1] == get_escrow(chain.state, e1)
    delete_escrow(chain.state, e1)  # refunded (SPEC §9)
    assert [i for i, _ in index.lookup(chain.state, owner=a)] == [e2]
    assert {i for i, _ in index.lookup(chain.state, merchant=m1)} == {e3}
    assert e1 not in index.by_merchant.get(m2, set())
    with pytest.raises(ValueError):
        index.lookup(chain.state, owner=a, merchant=m1)


def test_escrow_index_rebuilds_after_a_reorg():
    chain, index = FakeChain(), EscrowIndex()
    (e1,) = chain.connect(H[5], [escrow_tx(H[1], 0, [public_key(H[3])])])
    chain.sync(index)
    # the tip block is replaced by another holding a different escrow
    delete_escrow(chain.state, e1)
    chain.main.pop()
    (e2,) = chain.connect(H[6], [escrow_tx(H[1], 5, [public_key(H[3])])])
    chain.sync(index)
    assert index.rebuilds == 2
    assert [i for i, _ in index.lookup(chain.state, owner=public_key(H[1]))] == [e2]
    assert e2 == compute_escrow_id(H[6], chain.blocks[H[6]].txs[0].txid())


# ---- fee estimation ---------------------------------------------------------------------

def test_mempool_feerate_is_just_above_the_first_left_out():
    pool = [(1000, 100), (500, 100), (300, 100), (0, 100)]  # 10, 5, 3, 0 units/byte
    assert mempool_feerate(pool, 10_000, 50) == 0  # everything fits
    assert mempool_feerate(pool, 250, 50) == 4  # 10 and 5 fit beside us: beat the 3
    assert mempool_feerate(pool, 200, 50) == 6  # only 10 fits beside us: beat the 5
    assert mempool_feerate(pool, 149, 50) == 11
    assert mempool_feerate([], 100, 50) == 0


def test_blocks_feerate_counts_only_full_blocks_and_needs_half():
    full = [BlockFees(950, 4.0), BlockFees(990, 2.5), BlockFees(1000, 7.0)]
    empty = [BlockFees(0, None), BlockFees(100, 9.0)]
    assert blocks_feerate(full, 1000) == (5, 3)  # median 4.0 -> 5
    assert blocks_feerate(full + empty, 1000) == (5, 3)
    assert blocks_feerate(full[:1] + empty, 1000) == (0, 1)
    assert blocks_feerate([], 1000) == (0, 0)


def test_full_pool_admission_term():
    estimator = FeeEstimator(120_000)
    pool = [(1000, 100), (550, 100)]  # 10 and 5.5 units/byte: fits one template easily
    est = estimator.estimate(1, pool, [H[0]], lambda h: SimpleNamespace(txs=[]))
    assert est["feerate"] == 0 and est["admission_feerate"] == 0
    est = estimator.estimate(1, pool, [H[0]], lambda h: SimpleNamespace(txs=[]), full_pool=True)
    assert est["admission_feerate"] == 6 == est["feerate"]  # strictly above 5.5
    assert admission_feerate([]) == 0 and admission_feerate([(500, 100)]) == 6


def test_redeem_sizes_cover_real_redeems():
    size_one, per_ticket = redeem_sizes()
    ticket = Ticket(1, 3, bytes(32), 77, bytes(64))
    for n, fee in ((1, 0), (1, 10**12), (5, 123_456)):
        real = len(make_redeem(SEED, H[9], fee, [ticket] * n).encode())
        assert real <= size_one + (n - 1) * per_ticket
    assert per_ticket >= 107


def test_estimator_combines_terms_and_caches_blocks():
    estimator = FeeEstimator(120_000)  # 100 000 template bytes
    transfer = make_transfer(SEED, H[9], 0, 5000, bytes(32), 1)
    size = len(transfer.encode())
    full_block = SimpleNamespace(txs=[transfer] * (95_000 // size + 1))
    reads = []

    def get_block(h):
        reads.append(h)
        return full_block if h != H[0] else SimpleNamespace(txs=[])

    est = estimator.estimate(1, [], [H[0], H[1], H[2]], get_block)
    assert est["blocks"] == 2 and est["full_blocks"] == 2  # genesis not examined
    assert est["blocks_feerate"] == 5000 // size + 1 == est["feerate"]
    assert est["mempool_feerate"] == 0
    assert est["redeem_fee"] == est["feerate"] * est["redeem_size"]
    estimator.estimate(3, [(1, 1)] * 10, [H[0], H[1], H[2]], get_block)
    assert reads == [H[1], H[2]]  # cached by hash
    with pytest.raises(ValueError, match="target_blocks must be in 1..1008"):
        estimator.estimate(0, [], [H[0]], get_block)


# ---- the methods on a real Node -----------------------------------------------------------

def call(dispatcher: Dispatcher, method: str, *params):
    async def go():
        return await dispatcher.handle_body(json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode())
    return json.loads(trio.run(go))


@pytest.fixture
def node(tmp_path):
    from node.node import Node
    n = Node(PARAMS, tmp_path)
    yield n
    n.store.close()


def test_rpc_methods_on_a_node(node):
    from node.rpc_methods import make_methods
    methods = make_methods(node)
    dispatcher = Dispatcher(methods)
    tip = {"hash": node.chain.tip.hash.hex(), "height": 0}
    assert call(dispatcher, "waitfornewblock", 1)["result"] == tip
    assert call(dispatcher, "waitforblockheight", 0)["result"] == tip
    assert call(dispatcher, "waitforblockheight", 5, 1)["result"] == tip
    assert call(dispatcher, "waitfornewblock", 1000, "00" * 32)["result"] == tip
    assert call(dispatcher, "waitfornewblock", -5)["error"] == {
        "code": -8, "message": "timeout must be >= 0 (milliseconds, 0 = no timeout)"}
    assert call(dispatcher, "waitforblockheight", "x")["error"]["code"] == -32602
    owner = encode_address(public_key(SEED))
    assert call(dispatcher, "listescrows", {"owner": owner})["result"] == []
    assert call(dispatcher, "listescrows", "merchant", owner)["result"] == []
    assert call(dispatcher, "listescrows", {"payer": owner})["error"]["code"] == -8
    assert call(dispatcher, "listescrows", {"owner": "nope"})["error"]["code"] == -8
    est = call(dispatcher, "estimatefee")["result"]
    assert est["feerate"] == 0 and est["target_blocks"] == 1 and est["blocks"] == 0
    assert call(dispatcher, "estimatefee", 2000)["error"] == {
        "code": -8, "message": "target_blocks must be in 1..1008"}


def test_waitfornewblock_woken_by_node_mining(node):
    from node.rpc_methods import make_methods
    methods = make_methods(node)

    async def main():
        result = {}

        async def waiter():
            result["tip"] = await methods["waitfornewblock"](10_000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            (mined,) = await node.generate(1, public_key(SEED))
        assert result["tip"] == {"hash": mined.hex(), "height": 1}
    trio.run(main)


# ---- the wallet's side: RpcChainView.wait_for_new_block -------------------------------------

def run_view(tmp_path, methods: dict, body):
    """Serve ``methods`` with a real RpcServer; run ``await body(view)`` on an RpcChainView."""
    from node.rpc import RpcServer
    from wallet.merchant.chainview import RpcChainView
    from wallet.rpcclient import RpcClient

    cookie = tmp_path / ".cookie"

    async def main():
        server = RpcServer(methods, cookie_path=cookie)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            rpc = RpcClient.from_cookie(f"http://127.0.0.1:{port}/", cookie, timeout=10)
            view = await RpcChainView.create(rpc, PARAMS)
            try:
                return await body(view)
            finally:
                rpc.close()
                nursery.cancel_scope.cancel()
    return trio.run(main)


def test_view_waits_with_current_tip(tmp_path):
    seen = []

    def getinfo():
        return {"height": 4, "best_hash": "11" * 32, "genesis_hash": "00" * 32,
                "chain": "regtest"}

    def waitfornewblock(timeout: int = 0, current_tip: str | None = None):
        seen.append((timeout, current_tip))
        return {"hash": "22" * 32, "height": 5}

    async def body(view):
        first = await view.wait_for_new_block(2.0)
        second = await view.wait_for_new_block(60.0)  # cut to half the client's 10 s
        return first, second, view.can_wait

    assert run_view(tmp_path, {"getinfo": getinfo, "waitfornewblock": waitfornewblock},
                    body) == (5, 5, True)
    assert seen == [(2000, "11" * 32), (5000, "22" * 32)]


def test_view_falls_back_to_polling_an_older_node(tmp_path):
    heights = iter([7, 7, 8])

    def getinfo():
        return {"height": next(heights), "best_hash": "11" * 32, "genesis_hash": "00" * 32,
                "chain": "regtest"}

    async def body(view):
        began = trio.current_time()
        height = await view.wait_for_new_block(5.0)
        return height, view.can_wait, trio.current_time() - began

    height, can_wait, elapsed = run_view(tmp_path, {"getinfo": getinfo}, body)
    assert (height, can_wait) == (7, False) and 0.4 <= elapsed < 5


# ---- the wallet's side: --wait (WalletContext.wait_confirmed) ------------------------------

def serve_sync(tmp_path, methods: dict, fn):
    """Serve ``methods`` with a real RpcServer; run ``fn(rpc_client)`` in a thread."""
    from node.rpc import RpcServer
    from wallet.rpcclient import RpcClient

    cookie = tmp_path / ".cookie"

    async def main():
        server = RpcServer(methods, cookie_path=cookie)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            with RpcClient.from_cookie(f"http://127.0.0.1:{port}/", cookie, timeout=10) as rpc:
                result = await trio.to_thread.run_sync(fn, rpc)
            nursery.cancel_scope.cancel()
        return result
    return trio.run(main)


def tx_methods(confirm_after: int, calls: list, *, can_wait: bool) -> dict:
    """getinfo, gettransaction (mempool until called ``confirm_after`` times) and, if
    ``can_wait``, a waitfornewblock that returns at once with a new tip."""
    def getinfo():
        calls.append("getinfo")
        return {"height": 1, "best_hash": "11" * 32}

    def gettransaction(txid: str):
        calls.append("gettransaction")
        if calls.count("gettransaction") < confirm_after:
            return {"status": "mempool"}
        return {"status": "confirmed", "height": 2, "block_hash": "22" * 32,
                "confirmations": 1}

    async def waitfornewblock(timeout: int = 0, current_tip: str | None = None):
        calls.append(("waitfornewblock", current_tip))
        return {"hash": "22" * 32, "height": 2}

    methods = {"getinfo": getinfo, "gettransaction": gettransaction}
    if can_wait:
        methods["waitfornewblock"] = waitfornewblock
    return methods


def test_wait_confirmed_waits_on_new_blocks(tmp_path):
    from wallet.commands.common import WalletContext
    calls: list = []

    def fn(rpc):
        return WalletContext(tmp_path / "w", _rpc=rpc).wait_confirmed("ab" * 32, 30)

    found = serve_sync(tmp_path, tx_methods(3, calls, can_wait=True), fn)
    assert found["status"] == "confirmed"
    assert calls == ["getinfo", "gettransaction", ("waitfornewblock", "11" * 32),
                     "gettransaction", ("waitfornewblock", "22" * 32), "gettransaction"]


def test_wait_confirmed_polls_an_older_node(tmp_path):
    from wallet.commands.common import WalletContext
    calls: list = []

    def fn(rpc):
        return WalletContext(tmp_path / "w", _rpc=rpc).wait_confirmed("ab" * 32, 30)

    found = serve_sync(tmp_path, tx_methods(4, calls, can_wait=False), fn)
    assert found["status"] == "confirmed"
    assert calls == ["getinfo"] + ["gettransaction"] * 4  # polled after method-not-found


def test_view_returns_at_once_when_it_already_saw_a_newer_height(tmp_path):
    """The ticket service's getinfo may move the view's tip while the redeemer steps:
    ``after`` makes the redeemer's next wait return at once instead of missing a block."""
    waits = []

    def getinfo():
        return {"height": 6, "best_hash": "66" * 32, "genesis_hash": "00" * 32,
                "chain": "regtest"}

    def waitfornewblock(timeout: int = 0, current_tip: str | None = None):
        waits.append(current_tip)
        return {"hash": "77" * 32, "height": 7}

    async def body(view):
        return (await view.wait_for_new_block(5.0, after=5),
                await view.wait_for_new_block(5.0, after=6))

    assert run_view(tmp_path, {"getinfo": getinfo, "waitfornewblock": waitfornewblock},
                    body) == (6, 7)
    assert waits == ["66" * 32]
