"""Durability: a clean restart keeps the tip; a SIGKILL while mining leaves the store at a
valid tip from which the node restarts and syncs (DESIGN "one write batch per block")."""

from __future__ import annotations

import threading

import pytest

from tests.functional.framework import (
    connect_nodes,
    sync_blocks,
    test_address,
    wait_until,
)
from wallet.rpcclient import RpcClient, RpcConnectionError, RpcError

pytestmark = pytest.mark.timeout(180)

MINER = 9
BUSY_BLOCKS = 200  # one generate call long enough (~0.5 s and up) to be killed mid-way


def assert_valid_chain(node) -> dict:
    """Walk the node's main chain from tip to genesis via RPC; return getinfo.

    Every height's hash must name a block of that height whose ``prev_hash`` is the
    hash at height - 1, and the tip must be ``best_hash``.
    """
    info = node.getinfo()
    tip = node.rpc.call("getblock", info["best_hash"])
    assert tip["height"] == info["height"] and tip["hash"] == info["best_hash"]
    child = tip
    for height in range(info["height"] - 1, -1, -1):
        block_hash = node.rpc.call("getblockhash", height)
        assert child["prev_hash"] == block_hash, f"chain broken at height {height}"
        child = node.rpc.call("getblock", block_hash)
        assert child["height"] == height
    assert child["hash"] == info["genesis_hash"]
    return info


def test_restart_keeps_tip(nodes_factory):
    """After generate and a clean restart the node reports the same tip and state."""
    (node,) = nodes_factory.start_nodes(1)
    hashes = node.rpc.call("generate", 10, test_address(MINER))
    before = node.rpc.call("getstatehash")
    assert before["height"] == 10 and before["best_hash"] == hashes[-1]
    assert node.stop() == 0
    node.start()
    info = assert_valid_chain(node)
    assert info["height"] == 10 and info["best_hash"] == hashes[-1]
    assert node.rpc.call("getstatehash") == before
    assert node.rpc.call("getaccount", test_address(MINER))["balance"] == 10 * 50 * 10**8


def test_sigkill_while_mining_then_recover_and_sync(nodes_factory):
    """SIGKILL during a long ``generate``; the restarted node is on a valid tip, its state hash
    is stable across another restart, and it then reorganizes onto a longer peer chain."""
    node, peer = nodes_factory.start_nodes(2, connect="none")
    node.rpc.call("generate", 10, test_address(MINER))

    errors: list[BaseException] = []

    def mine_busily() -> None:
        try:
            node.rpc.call("generate", BUSY_BLOCKS, test_address(MINER))
        except (RpcConnectionError, RpcError) as error:  # expected: the node dies under it
            errors.append(error)

    # A separate client with a short timeout polls while the other one is busy.
    poller = RpcClient.from_datadir(node.datadir, timeout=2)
    miner = threading.Thread(target=mine_busily, name="generate-busy", daemon=True)
    miner.start()
    try:
        # Kill as soon as the busy call has connected at least one block (or has ended).
        try:
            wait_until(lambda: not miner.is_alive() or _height(poller) > 10, 60,
                       description="busy generate under way")
        finally:
            node.kill()
    finally:
        miner.join(timeout=35)
        poller.close()
    assert not miner.is_alive(), "the generate thread did not end after the kill"
    assert node.returncode == -9
    assert errors, "generate finished before the kill: the crash did not hit a busy node"

    node.start()
    info = assert_valid_chain(node)
    assert 10 <= info["height"] < 10 + BUSY_BLOCKS
    state = node.rpc.call("getstatehash")
    assert state["best_hash"] == info["best_hash"] and state["height"] == info["height"]
    assert node.rpc.call("getstatehash") == state
    assert node.stop() == 0
    node.start()
    assert node.rpc.call("getstatehash") == state

    # The crashed node's chain must still extend and reorganize normally.
    node.rpc.call("generate", 1, test_address(MINER))
    longer = node.getinfo()["height"] + 5
    peer.generate(longer, test_address(MINER + 1))
    connect_nodes(node, peer)
    tip = sync_blocks([node, peer], timeout=60)
    assert tip == peer.getinfo()["best_hash"]
    assert node.getinfo()["height"] == longer
    assert node.rpc.call("getstatehash") == peer.rpc.call("getstatehash")
    assert_valid_chain(node)


def _height(client: RpcClient) -> int:
    """The node's height, or -1 while its RPC is busy or unreachable."""
    try:
        return client.call("getinfo")["height"]
    except RpcConnectionError:
        return -1
