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
