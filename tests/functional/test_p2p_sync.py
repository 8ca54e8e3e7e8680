"""Several nodes over the P2P protocol: block and tx relay, headers-first catch-up of a
late node, and a reorganization between two halves that mined apart (SPEC §10, §11)."""

from __future__ import annotations

import pytest

from consensus.tx import make_transfer
from tests.functional.chainserver import ChainServer, build_chain, wait_height
from tests.functional.framework import (
    PREMINE_AMOUNT,
    compute_genesis_hash,
    connect_nodes,
    sync_blocks,
    sync_mempools,
    test_address,
    test_pubkey,
    test_seed,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

MINER_A, MINER_B = 9, 10


def genesis_hash_of(node) -> bytes:
    """The node's genesis hash as bytes (for signing transactions)."""
    return bytes.fromhex(node.getinfo()["genesis_hash"])


def test_chain_of_three_converges_and_relays_tx(nodes_factory):
    """Blocks mined on node 0 reach node 2 through node 1; a tx sent to node 2 reaches
    node 0's mempool and then confirms everywhere."""
    nodes = nodes_factory.start_nodes(3, connect="chain")
    hashes = nodes[0].rpc.call("generate", 5, test_address(MINER_A))
    assert sync_blocks(nodes) == hashes[-1]
    assert all(n.getinfo()["height"] == 5 for n in nodes)
    assert all(n.getinfo()["peers"] >= 1 for n in nodes)

    tx = make_transfer(test_seed(0), genesis_hash_of(nodes[2]), 0, 500, test_pubkey(7), 10**6)
    txid = nodes[2].rpc.call("sendrawtransaction", tx.encode().hex())
    assert sync_mempools(nodes) == {txid}
    assert nodes[0].rpc.call("gettransaction", txid)["status"] == "mempool"

    (block_hash,) = nodes[1].rpc.call("generate", 1, test_address(MINER_B))
    assert sync_blocks(nodes) == block_hash
    assert sync_mempools(nodes) == set()
    for node in nodes:
        assert node.tx_status(txid) == ("confirmed", 6)
        assert node.rpc.call("getaccount", test_address(7))["balance"] == 10**6
    states = [n.rpc.call("getstatehash") for n in nodes]
    assert all(s == states[0] for s in states)


def test_late_node_catches_up_headers_first(nodes_factory):
    """A node started after 300 blocks were mined syncs them all from its --connect peer."""
    (first,) = nodes_factory.start_nodes(1)
    hashes = first.generate(300, test_address(MINER_A), chunk=100)
    late = nodes_factory.start_node(connect=[first])
    tip = sync_blocks([first, late], timeout=90)
    assert tip == hashes[-1]
    assert late.getinfo()["height"] == 300
    for height in (1, 150, 299):
        assert late.rpc.call("getblockhash", height) == hashes[height - 1]
    assert late.rpc.call("getstatehash") == first.rpc.call("getstatehash")
    assert late.rpc.call("getaccount", test_address(MINER_A))["balance"] == 300 * 50 * 10**8


def test_split_halves_reorganize_to_more_work(nodes_factory):
    """Halves {0,1} and {2,3} mine 5 and 8 blocks apart; joined, all adopt B's chain, the
    state hashes agree, and a tx confirmed only on A's side returns to the mempool."""
    nodes = nodes_factory.start_nodes(4, connect=[(1, 0), (3, 2)])
    half_a, half_b = nodes[:2], nodes[2:]
    genesis_hash = genesis_hash_of(nodes[0])

    # A transfer confirmed only in half A (the side that will lose).
    tx = make_transfer(test_seed(3), genesis_hash, 0, 250, test_pubkey(8), 777_000)
    txid = nodes[0].rpc.call("sendrawtransaction", tx.encode().hex())
    sync_mempools(half_a)
    nodes[0].rpc.call("generate", 5, test_address(MINER_A))
    tip_a = sync_blocks(half_a)
    assert nodes[1].rpc.call("gettransaction", txid)["status"] == "confirmed"
    assert nodes[1].rpc.call("getaccount", test_address(8))["balance"] == 777_000

    nodes[2].rpc.call("generate", 8, test_address(MINER_B))
    tip_b = sync_blocks(half_b)
    assert tip_a != tip_b
    assert nodes[3].rpc.call("gettransaction", txid) is None

    connect_nodes(nodes[1], nodes[2])
    assert sync_blocks(nodes, timeout=60) == tip_b
    assert all(n.getinfo()["height"] == 8 for n in nodes)
    states = [n.rpc.call("getstatehash") for n in nodes]
    assert all(s == states[0] for s in states), states

    # The reorg undid A's blocks: the transfer is unconfirmed again and back in A's pools.
    for node in half_a:
        wait_until(lambda node=node: txid in node.rpc.call("getrawmempool"), 30,
                   description=f"tx back in node {node.index}'s mempool")
        assert node.rpc.call("gettransaction", txid)["status"] == "mempool"
    for node in nodes:
        assert node.rpc.call("getaccount", test_address(8))["balance"] == 0
        sender = node.rpc.call("getaccount", test_address(3))
        assert (sender["balance"], sender["nonce"]) == (PREMINE_AMOUNT, 0)
        assert node.rpc.call("getaccount", test_address(MINER_A))["balance"] == 0

    # It is valid on the new chain, so mining on the winning side confirms it everywhere.
    (block_hash,) = nodes[0].rpc.call("generate", 1, test_address(MINER_A))
    assert sync_blocks(nodes) == block_hash
    for node in nodes:
        assert node.tx_status(txid) == ("confirmed", 9)
        assert node.rpc.call("getaccount", test_address(8))["balance"] == 777_000


IDLE_CHAIN_BLOCKS = 6_100  # > 3 full header batches of 2000


def test_fresh_node_syncs_every_header_batch_from_an_idle_peer(nodes_factory):
    """Regression (issue 5): from a peer that never mines, sync went no further than
    ~2 034 blocks. A fresh node must fetch all 6 100 (4 getheaders batches)."""
    blocks = build_chain(IDLE_CHAIN_BLOCKS)
    genesis = compute_genesis_hash()
    with ChainServer(genesis, blocks) as server:
        node = nodes_factory.start_node(connect=[server.address])
        wait_height(node, IDLE_CHAIN_BLOCKS, timeout=160)
        assert node.getinfo()["best_hash"] == blocks[-1].hash().hex()
        assert server.blocks_served == IDLE_CHAIN_BLOCKS  # each block fetched once
        assert server.getheaders_served >= 4


def test_node_told_one_peer_connects_to_the_others_it_learns_of(nodes_factory):
    """Address gossip (SPEC §11 getaddr/addr): C is started with --connect B only and
    learns A from B's `addr` reply; it dials A and gets A's blocks directly too."""
    a, b = nodes_factory.start_nodes(2, connect=[(1, 0)])
    c = nodes_factory.start_node(connect=[b])
    ports = lambda: {int(str(p["address"]).rsplit(":", 1)[1]) for p in c.peers()
                     if not p["inbound"]}
    wait_until(lambda: {a.p2p_port, b.p2p_port} <= ports(), 30,
               description="C connected to A, learned from B")
    (block_hash,) = a.rpc.call("generate", 1, test_address(MINER_A))
    assert sync_blocks([a, b, c]) == block_hash
