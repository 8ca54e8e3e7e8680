"""One node over JSON-RPC: getinfo, mining, block shapes, accounts, a TRANSFER from
mempool to block, reject reasons, and a clean ``stop`` (SPEC §2, §10, §12)."""

from __future__ import annotations

import pytest

from consensus.address import encode_address
from consensus.block import Block
from consensus.tx import make_transfer
from tests.functional.framework import (
    BLOCK_REWARD,
    GENESIS_TIME,
    PREMINE_AMOUNT,
    REGTEST_TARGET_HEX,
    REGTEST_VDF_CHECKPOINTS,
    ZERO_HASH_HEX,
    assert_rpc_error,
    compute_genesis_hash,
    test_address,
    test_pubkey,
    test_seed,
)

pytestmark = pytest.mark.timeout(120)

MINER = 9  # test key that receives coinbases; not premined
HEADER_FIELDS = {"version", "height", "prev_hash", "timestamp", "target", "nonce", "tx_root",
                 "vdf", "vdf_checkpoints"}


def is_hex(text: object, n_bytes: int) -> bool:
    """Whether ``text`` is exactly ``n_bytes`` bytes of lower- or upper-case hex."""
    if not isinstance(text, str) or len(text) != 2 * n_bytes:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def test_getinfo_fresh_node(nodes_factory):
    """A fresh node is at genesis, whose hash matches the locally computed one."""
    (node,) = nodes_factory.start_nodes(1)
    info = node.getinfo()
    assert {"chain", "height", "best_hash", "genesis_hash", "peers", "mempool", "target",
            "burned"} <= set(info)
    assert "regtest" in info["chain"]
    assert info["height"] == 0
    assert info["genesis_hash"] == compute_genesis_hash().hex()
    assert info["best_hash"] == info["genesis_hash"]
    assert (info["peers"], info["mempool"], info["burned"]) == (0, 0, 0)
    assert info["target"] == REGTEST_TARGET_HEX
    assert node.rpc.call("getblockhash", 0) == info["genesis_hash"]
    assert node.rpc.call("getrawmempool") == []
    assert node.rpc.call("getpeerinfo") == []


def test_generate_and_block_shapes(nodes_factory):
    """generate returns the new hashes; getblock/getblockhash agree and have SPEC §12 shape."""
    (node,) = nodes_factory.start_nodes(1)
    genesis = node.rpc.call("getblock", 0)
    assert HEADER_FIELDS | {"hash", "size", "txids"} <= set(genesis)
    assert genesis["height"] == 0 and genesis["prev_hash"] == ZERO_HASH_HEX
    assert genesis["timestamp"] == GENESIS_TIME and genesis["nonce"] == 0
    assert genesis["vdf"] == ZERO_HASH_HEX and genesis["vdf_checkpoints"] == []
    assert len(genesis["txids"]) == 1  # the premine coinbase

    hashes = node.rpc.call("generate", 3, test_address(MINER))
    assert isinstance(hashes, list) and len(hashes) == 3
    assert all(is_hex(h, 32) for h in hashes) and len(set(hashes)) == 3
    info = node.getinfo()
    assert info["height"] == 3 and info["best_hash"] == hashes[-1]

    parent = genesis
    for height, block_hash in enumerate(hashes, start=1):
        assert node.rpc.call("getblockhash", height) == block_hash
        block = node.rpc.call("getblock", block_hash)
        assert node.rpc.call("getblock", height) == block  # hash_or_height
        raw = bytes.fromhex(node.rpc.call("getblock", height, 0))  # verbosity 0: raw hex
        assert len(raw) == block["size"] and Block.decode(raw).hash().hex() == block_hash
        assert block["hash"] == block_hash
        assert block["version"] == 1 and block["height"] == height
        assert block["prev_hash"] == parent["hash"]
        assert block["timestamp"] > genesis["timestamp"]
        assert block["target"] == REGTEST_TARGET_HEX
        assert int(block_hash, 16) <= int(block["target"], 16)  # PoW holds
        assert isinstance(block["nonce"], int) and 0 <= block["nonce"] < 2**64
        assert is_hex(block["tx_root"], 32) and is_hex(block["vdf"], 32)
        assert len(block["vdf_checkpoints"]) == REGTEST_VDF_CHECKPOINTS - 1
        assert all(is_hex(c, 32) for c in block["vdf_checkpoints"])
        assert len(block["txids"]) == 1 and is_hex(block["txids"][0], 32)  # coinbase only
        assert isinstance(block["size"], int) and block["size"] > 0
        parent = block


def test_premined_account_and_address_forms(nodes_factory):
    """getaccount reports the premine; hex and bech32m addresses name the same account."""
    (node,) = nodes_factory.start_nodes(1)
    account = node.rpc.call("getaccount", test_address(0))
    assert account["balance"] == PREMINE_AMOUNT and account["nonce"] == 0
    assert account["address"] in (test_address(0), encode_address(test_pubkey(0)))
    by_bech32 = node.rpc.call("getaccount", encode_address(test_pubkey(0)))
    assert by_bech32["balance"] == PREMINE_AMOUNT and by_bech32["nonce"] == 0
    unknown = node.rpc.call("getaccount", test_address(42))
    assert (unknown["balance"], unknown["nonce"]) == (0, 0)


def test_transfer_mempool_to_block(nodes_factory):
    """A TRANSFER enters the mempool, confirms after generate, and moves the balances."""
    (node,) = nodes_factory.start_nodes(1)
    genesis_hash = bytes.fromhex(node.getinfo()["genesis_hash"])
    node.rpc.call("generate", 2, test_address(MINER))
    amount, fee = 12_345, 1_000
    tx = make_transfer(test_seed(0), genesis_hash, 0, fee, test_pubkey(6), amount)
    txid = node.rpc.call("sendrawtransaction", tx.encode().hex())
    assert txid == tx.txid().hex()
    assert node.rpc.call("getrawmempool") == [txid]
    assert node.getinfo()["mempool"] == 1
    status = node.rpc.call("gettransaction", txid)
    assert status["status"] == "mempool" and status.get("height") is None
    assert node.rpc.call("gettransaction", "ab" * 32) is None

    (block_hash,) = node.rpc.call("generate", 1, test_address(MINER))
    block = node.rpc.call("getblock", block_hash)
    assert block["height"] == 3 and block["txids"][1:] == [txid]
    assert node.tx_status(txid) == ("confirmed", 3)
    assert node.rpc.call("getrawmempool") == []
    assert node.getinfo()["mempool"] == 0

    sender = node.rpc.call("getaccount", test_address(0))
    assert (sender["balance"], sender["nonce"]) == (PREMINE_AMOUNT - amount - fee, 1)
    receiver = node.rpc.call("getaccount", test_address(6))
    assert (receiver["balance"], receiver["nonce"]) == (amount, 0)
    miner = node.rpc.call("getaccount", test_address(MINER))
    assert miner["balance"] == 3 * BLOCK_REWARD + fee


def test_invalid_transactions_reject_reasons(nodes_factory):
    """sendrawtransaction names the SPEC §2 reject reason; nothing invalid enters the pool."""
    (node,) = nodes_factory.start_nodes(1)
    genesis_hash = bytes.fromhex(node.getinfo()["genesis_hash"])
    send = lambda tx_hex: node.rpc.call("sendrawtransaction", tx_hex)  # noqa: E731

    first = make_transfer(test_seed(1), genesis_hash, 0, 10, test_pubkey(6), 5_000)
    send(first.encode().hex())
    node.rpc.call("generate", 1, test_address(MINER))
    assert node.rpc.call("getaccount", test_address(6))["balance"] == 5_000

    # bad-nonce: a different transfer reusing the spent nonce 0.
    reused = make_transfer(test_seed(1), genesis_hash, 0, 10, test_pubkey(6), 7_000)
    assert_rpc_error("bad-nonce", send, reused.encode().hex())
    # insufficient-funds: key 6 holds 5 000 units; amount + fee is 5 001.
    broke = make_transfer(test_seed(6), genesis_hash, 0, 1, test_pubkey(0), 5_000)
    assert_rpc_error("insufficient-funds", send, broke.encode().hex())
    # bad-signature: flip one bit of the signature (the last 64 bytes of the encoding).
    good = make_transfer(test_seed(2), genesis_hash, 0, 10, test_pubkey(6), 1_000)
    forged = bytearray(good.encode())
    forged[-1] ^= 0x01
    assert_rpc_error("bad-signature", send, bytes(forged).hex())
    # bad-signature too when signed for another chain's genesis.
    other_chain = make_transfer(test_seed(2), b"\x07" * 32, 0, 10, test_pubkey(6), 1_000)
    assert_rpc_error("bad-signature", send, other_chain.encode().hex())
    # bad-encoding: garbage bytes, and a valid tx with a trailing byte.
    assert_rpc_error("bad-encoding", send, "deadbeef")
    assert_rpc_error("bad-encoding", send, (good.encode() + b"\x00").hex())
    assert node.rpc.call("getrawmempool") == []
    # The untouched original is still acceptable: the rejections changed nothing.
    assert send(good.encode().hex()) == good.txid().hex()
    assert node.rpc.call("getrawmempool") == [good.txid().hex()]


def test_stop_is_clean(nodes_factory):
    """RPC stop answers true, the process exits 0 and the cookie is removed."""
    (node,) = nodes_factory.start_nodes(1)
    node.rpc.call("generate", 1, test_address(MINER))
    assert node.rpc.call("stop") is True
    status = node.wait_for_exit(30)
    assert status == 0, f"node exited with {status}\n{node.log_tail(30)}"
    assert not (node.datadir / ".cookie").exists(), "cookie left behind after a clean stop"


def test_sendrawtransaction_batch_checked_in_workers(nodes_factory):
    """A JSON-RPC batch of transfers (signatures checked in the worker processes, in
    chunks, while the calls run) answers each call as one at a time would: a forged
    signature is bad-signature, a repeat is already in the mempool, the rest are pooled."""
    import httpx

    (node,) = nodes_factory.start_nodes(1)
    genesis_hash = bytes.fromhex(node.getinfo()["genesis_hash"])
    txs = [make_transfer(test_seed(i % 4), genesis_hash, i // 4, 10, test_pubkey(6), 100 + i)
           for i in range(40)]
    forged = bytearray(txs[21].encode())
    forged[-1] ^= 0x01
    hexes = [tx.encode().hex() for tx in txs]
    hexes[21] = bytes(forged).hex()
    hexes.append(hexes[3])
    batch = [{"jsonrpc": "2.0", "id": i, "method": "sendrawtransaction", "params": [h]}
             for i, h in enumerate(hexes)]
    user, _, password = (node.datadir / ".cookie").read_text().strip().partition(":")
    replies = httpx.post(f"http://127.0.0.1:{node.rpc_port}/", json=batch,
                         auth=(user, password), timeout=60).json()
    by_id = {r["id"]: r for r in replies}
    assert by_id[21]["error"]["message"] == "bad-signature"
    assert by_id[40]["error"]["message"] == "txn-already-in-mempool"
    # key 1's later nonces wait for the forged nonce 5 (kept aside, not pooled)
    pooled = [i for i in range(40) if "result" in by_id[i]]
    assert all(by_id[i]["result"] == txs[i].txid().hex() for i in pooled)
    assert len(pooled) == 39
    mempool = set(node.rpc.call("getrawmempool"))
    assert {txs[i].txid().hex() for i in range(40) if i % 4 != 1 or i < 21} <= mempool
    assert txs[21].txid().hex() not in mempool
