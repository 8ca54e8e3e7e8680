"""The comparison schemes on a real node (SPEC §12, §15, §16): an MP escrow and a channel
created over ``sendrawtransaction``, seen through ``getmpescrow`` / ``getchannel`` after a
``generate``, then claimed and closed, after which both answer null."""

from __future__ import annotations

import pytest

from consensus.address import encode_address
from consensus.channel import compute_channel_id, sign_voucher
from consensus.micropay import compute_mp_commitment, compute_mp_escrow_id, sign_mp_ticket
from consensus.tx import make_channel_close, make_channel_open, make_mp_claim, make_mp_escrow
from tests.functional.framework import (PREMINE_AMOUNT, assert_rpc_error, test_address,
                                        test_pubkey, test_seed)

pytestmark = pytest.mark.timeout(120)

MINER, PAYEE = 9, 6


def test_getmpescrow_and_getchannel_over_rpc(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    genesis_hash = bytes.fromhex(node.getinfo()["genesis_hash"])
    send = lambda tx: node.rpc.call("sendrawtransaction", tx.encode().hex())  # noqa: E731
    node.rpc.call("generate", 2, test_address(MINER))

    escrow_tx = make_mp_escrow(test_seed(0), genesis_hash, 0, 10, 50_000, 1, 40)
    open_tx = make_channel_open(test_seed(0), genesis_hash, 1, 10, test_pubkey(PAYEE),
                                30_000, 5_000, 40)
    send(escrow_tx)
    send(open_tx)
    mp_id, ch_id = compute_mp_escrow_id(escrow_tx.txid()), compute_channel_id(open_tx.txid())
    assert node.rpc.call("getmpescrow", mp_id.hex()) is None  # still pooled
    node.rpc.call("generate", 1, test_address(MINER))

    assert node.rpc.call("getmpescrow", mp_id.hex()) == {
        "mp_escrow_id": mp_id.hex(), "owner": encode_address(test_pubkey(0)),
        "amount": 50_000, "win_bits": 1, "refund_height": 40}
    assert node.rpc.call("getchannel", ch_id.hex()) == {
        "channel_id": ch_id.hex(), "payer": encode_address(test_pubkey(0)),
        "payee": encode_address(test_pubkey(PAYEE)), "deposit": 30_000, "penalty": 5_000,
        "expiry_height": 40}
    assert node.rpc.call("getmpescrow", "ab" * 32) is None
    assert node.rpc.call("getchannel", "ab" * 32) is None
    hash_before = node.rpc.call("getstatehash")["state_hash"]

    # r1 == r2 makes r1 XOR r2 zero: a winner for any win_bits.
    r1 = bytes(range(16))
    ticket = sign_mp_ticket(test_seed(0), genesis_hash, mp_id, compute_mp_commitment(r1), r1,
                            test_pubkey(PAYEE))
    claim = make_mp_claim(test_seed(PAYEE), genesis_hash, 100, mp_id, r1, ticket.r2,
                          ticket.ticket_sig)
    voucher = sign_voucher(test_seed(0), genesis_hash, ch_id, 3, 12_000)
    close = make_channel_close(test_seed(PAYEE), genesis_hash, 0, ch_id, voucher)
    send(claim)
    send(close)
    # A second claim of the same escrow conflicts with the pooled one.
    assert_rpc_error("unknown-mp-escrow", send,
                     make_mp_claim(test_seed(PAYEE), genesis_hash, 99, mp_id, r1, ticket.r2,
                                   ticket.ticket_sig))
    node.rpc.call("generate", 1, test_address(MINER))

    assert node.rpc.call("getmpescrow", mp_id.hex()) is None
    assert node.rpc.call("getchannel", ch_id.hex()) is None
    assert node.rpc.call("getstatehash")["state_hash"] != hash_before
    payee = node.rpc.call("getaccount", test_address(PAYEE))
    assert payee["balance"] == 50_000 - 100 + 12_000
    payer = node.rpc.call("getaccount", test_address(0))
    assert payer["balance"] == PREMINE_AMOUNT - 20 - 50_000 - 30_000 - 5_000 + 18_000 + 5_000
    assert payer["nonce"] == 2
