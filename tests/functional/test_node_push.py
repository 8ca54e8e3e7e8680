"""Push RPCs on a real node: ``waitfornewblock`` / ``waitforblockheight`` answered while a
second client mines, other requests served meanwhile, ``listescrows`` by owner and
merchant through creation and refund, and ``estimatefee`` (issue 8 points 3 and 6)."""

from __future__ import annotations

import threading
import time

import pytest

from consensus.address import encode_address
from consensus.escrow import compute_escrow_id, compute_min_penalty
from consensus.params import get_params
from consensus.tx import make_escrow_create
from tests.functional.framework import assert_rpc_error, test_pubkey, test_seed
from wallet.rpcclient import RpcClient

pytestmark = pytest.mark.timeout(120)


class Waiter(threading.Thread):
    """Runs one RPC call on its own connection in a thread; ``result``/``elapsed`` after."""

    def __init__(self, node, method: str, *params) -> None:
        super().__init__(daemon=True)
        self.rpc = RpcClient.from_datadir(node.datadir, timeout=60)
        self.method, self.params = method, params
        self.result, self.error, self.elapsed = None, None, None

    def run(self) -> None:
        began = time.monotonic()
        try:
            self.result = self.rpc.call(self.method, *self.params)
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - began
            self.rpc.close()


def test_other_requests_served_while_one_waits(nodes_factory):
    """While a 3 s ``waitforblockheight`` is pending, getinfo keeps answering at once."""
    (node,) = nodes_factory.start_nodes(1)
    waiter = Waiter(node, "waitforblockheight", 1, 3_000)
    waiter.start()
    latencies = []
    for _ in range(10_000):  # bounded by the waiter's 3 s timeout
        if not waiter.is_alive():
            break
        began = time.monotonic()
        assert node.getinfo()["height"] == 0
        latencies.append(time.monotonic() - began)
    waiter.join(timeout=30)
    assert waiter.error is None and waiter.result["height"] == 0  # timed out at the tip
    assert waiter.elapsed >= 2.9
    assert len(latencies) >= 10 and max(latencies) < 1.5, max(latencies)


def test_waitfornewblock_wakes_on_a_block_mined_by_another_client(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    waiter = Waiter(node, "waitfornewblock", 60_000)
    waiter.start()
    mined = []
    for _ in range(20):  # a waiter that arrives late waits for the next block: mine again
        mined += node.generate(1)
        waiter.join(timeout=1.5)
        if not waiter.is_alive():
            break
    assert not waiter.is_alive() and waiter.error is None
    assert waiter.result["hash"] in mined
    assert waiter.result["height"] == mined.index(waiter.result["hash"]) + 1
    assert waiter.elapsed < 30


def test_stop_does_not_wait_for_waiters(nodes_factory):
    """A pending 60 s wait neither delays ``stop`` nor survives it."""
    (node,) = nodes_factory.start_nodes(1)
    waiter = Waiter(node, "waitforblockheight", 100, 60_000)
    waiter.start()
    assert node.getinfo()["height"] == 0
    began = time.monotonic()
    assert node.stop(timeout=20) == 0
    assert time.monotonic() - began < 20
    waiter.join(timeout=20)
    assert not waiter.is_alive() and waiter.elapsed < 30


def test_waitforblockheight_and_timeouts(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    genesis = node.getinfo()["best_hash"]
    waiter = Waiter(node, "waitforblockheight", 3, 60_000)
    waiter.start()
    hashes = []
    for _ in range(3):
        hashes += node.generate(1)
    waiter.join(timeout=30)
    assert waiter.error is None and waiter.result == {"hash": hashes[-1], "height": 3}
    # already there: immediate
    assert node.rpc.call("waitforblockheight", 2, 10_000) == {"hash": hashes[-1], "height": 3}
    # timeout: the current tip comes back
    began = time.monotonic()
    assert node.rpc.call("waitfornewblock", 200) == {"hash": hashes[-1], "height": 3}
    assert node.rpc.call("waitforblockheight", 10, 200) == {"hash": hashes[-1], "height": 3}
    assert time.monotonic() - began < 10
    # current_tip older than the tip: returns at once
    assert node.rpc.call("waitfornewblock", 60_000, genesis) == {"hash": hashes[-1],
                                                                 "height": 3}


def test_invalid_wait_params(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    assert_rpc_error("timeout must be >= 0 (milliseconds, 0 = no timeout)", node.rpc.call,
                     "waitfornewblock", -1)
    assert_rpc_error("height must be >= 0", node.rpc.call, "waitforblockheight", -1)
    assert_rpc_error("current_tip must be 64 hex digits", node.rpc.call, "waitfornewblock",
                     10, "zz")


def create_escrow(node, owner: int, merchants: list[int], nonce: int) -> str:
    """Pool and mine an ESCROW_CREATE of test key ``owner``; returns its escrow id."""
    params = get_params("regtest")
    info = node.getinfo()
    win_num, win_den, beta, tkt_rate, draw_len, rounds = 1, 2, 1000, 2, 1, 2
    penalty = compute_min_penalty(params, len(merchants), win_num, win_den, beta, tkt_rate,
                                  draw_len)
    tx = make_escrow_create(test_seed(owner), bytes.fromhex(info["genesis_hash"]), nonce, 1000,
                            beta * tkt_rate * rounds // 2, penalty, win_num, win_den, beta,
                            tkt_rate, draw_len, [test_pubkey(m) for m in merchants])
    txid = node.rpc.call("sendrawtransaction", tx.encode().hex())
    (block_hash,) = node.generate(1)
    assert node.tx_status(txid) == ("confirmed", info["height"] + 1)
    return compute_escrow_id(bytes.fromhex(block_hash), bytes.fromhex(txid)).hex()


def test_listescrows_by_owner_and_merchant(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    node.generate(1)
    e1 = create_escrow(node, 0, [5, 6], 0)
    e2 = create_escrow(node, 0, [6], 1)
    e3 = create_escrow(node, 1, [5], 0)
    rpc = node.rpc
    owner0 = encode_address(test_pubkey(0))

    def ids(*params):
        return [e["escrow_id"] for e in rpc.call("listescrows", *params)]

    assert ids({"owner": owner0}) == [e1, e2]
    assert ids("owner", test_pubkey(0).hex()) == [e1, e2]
    assert ids({"merchant": encode_address(test_pubkey(5))}) == [e1, e3]
    assert ids("merchant", encode_address(test_pubkey(6))) == [e1, e2]
    assert ids({"owner": encode_address(test_pubkey(7))}) == []
    listed = rpc.call("listescrows", {"owner": owner0})[0]
    assert listed == rpc.call("getescrow", e1)
    # SPEC §12: addresses in their bech32m text form
    assert listed["owner"] == owner0
    assert listed["merchants"] == [encode_address(test_pubkey(i)) for i in (5, 6)]
    # refunded escrows leave the list
    t_refund = max(rpc.call("getescrow", e)["t_refund"] for e in (e1, e2, e3))
    node.generate(t_refund - node.getinfo()["height"])
    assert ids({"owner": owner0}) == [] and ids("merchant", test_pubkey(5).hex()) == []
    e4 = create_escrow(node, 0, [5], 2)
    assert ids({"owner": owner0}) == [e4]
    assert_rpc_error('expected {"owner": ADDRESS}, {"merchant": ADDRESS} or '
                     '["owner"|"merchant", ADDRESS]', rpc.call, "listescrows", "payer", owner0)
    assert_rpc_error('expected {"owner": ADDRESS} or {"merchant": ADDRESS}', rpc.call,
                     "listescrows", {"owner": owner0, "merchant": owner0})


def test_estimatefee_shape(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    node.generate(2)
    est = node.rpc.call("estimatefee")
    assert est["feerate"] == 0 and est["redeem_fee"] == 0  # an empty chain: no competition
    assert est["target_blocks"] == 1 and est["blocks"] == 2 and est["full_blocks"] == 0
    assert 107 < est["redeem_size"] < 400 and est["ticket_size"] >= 107
    assert node.rpc.call("estimatefee", 6)["target_blocks"] == 6
    assert_rpc_error("target_blocks must be in 1..1008", node.rpc.call, "estimatefee", 0)


class CountingRpc(RpcClient):
    """An ``RpcClient`` that counts the calls per method (instrumentation only)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counts: dict[str, int] = {}

    def call(self, method: str, *params):
        self.counts[method] = self.counts.get(method, 0) + 1
        return super().call(method, *params)


def test_redeemer_reacts_to_the_draw_within_one_block_without_polling(nodes_factory, tmp_path):
    """A redeemer whose poll interval and wait are 60 s sends its REDEEM within seconds
    of block ``t_draw + 1``: only ``waitfornewblock`` can have woken it."""
    import trio

    from consensus.escrow import EscrowState, compute_t_draw, compute_t_expire
    from consensus.ticket import sign_ticket
    from wallet.merchant.chainview import RpcChainView
    from wallet.merchant.redeemer import Redeemer
    from wallet.merchant.ticketstore import NewTicket, TicketStore

    (node,) = nodes_factory.start_nodes(1)
    node.generate(1)
    eid = create_escrow(node, 0, [5], 0)  # tkt_rate 2, draw_len 1, p = 1/2: one winner of 2
    escrow = EscrowState.from_rpc(node.rpc.call("getescrow", eid))
    params = get_params("regtest")
    t_draw, t_expire = compute_t_draw(params, escrow, 0), compute_t_expire(params, escrow, 0)
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    port = node.rpc_port
    rpc = CountingRpc.from_cookie(f"http://127.0.0.1:{port}/", node.datadir / ".cookie",
                                  timeout=300)
    out: dict[str, float] = {}

    async def main() -> None:
        view = await RpcChainView.create(rpc)
        with TicketStore(tmp_path / "store") as store:
            store.add_tickets([
                NewTicket(bytes.fromhex(eid), s, 0, escrow.start, 0, t_draw, t_expire,
                          sign_ticket(test_seed(0), genesis, bytes.fromhex(eid), 0, s).encode())
                for s in (0, 1)])
            redeemer = Redeemer(test_seed(5), store, view, poll_interval=60, wait_seconds=60)
            async with trio.open_nursery() as nursery:
                await nursery.start(redeemer.run)
                height = node.getinfo()["height"]
                await trio.to_thread.run_sync(node.generate, t_draw - height)
                began = trio.current_time()
                await trio.to_thread.run_sync(node.generate, 1)  # block t_draw + 1
                with trio.fail_after(20):
                    while not await trio.to_thread.run_sync(node.rpc.call, "getrawmempool"):
                        await trio.sleep(0.05)
                out["reaction"] = trio.current_time() - began
                out["wakeups"] = redeemer.wakeups
                nursery.cancel_scope.cancel()

    trio.run(main)
    rpc.close()
    (txid,) = node.rpc.call("getrawmempool")
    assert out["reaction"] < 10, out  # the poll interval and the wait timeout are 60 s
    assert out["wakeups"] <= 2 + (t_draw + 1 - escrow.created_height), out
    assert rpc.counts.get("waitfornewblock", 0) >= 1 and rpc.counts["getdraw"] >= 1
    assert rpc.counts["getinfo"] <= 3, rpc.counts  # no height polling
    (block_hash,) = node.generate(1)
    assert node.tx_status(txid)[0] == "confirmed"
