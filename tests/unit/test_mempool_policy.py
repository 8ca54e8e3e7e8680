"""Mempool relay policy: a transaction above MAX_TX_BYTES is refused (issue 6)."""

import pytest

from consensus.ticket import sign_ticket
from consensus.tx import make_redeem
from node.mempool import Mempool, PolicyError
from p2p.messages import MAX_TX_BYTES
from tests.consensus_helpers import ALICE_SEED, BOB_SEED, Chain


def test_oversize_tx_is_refused_by_policy_before_any_check():
    chain = Chain()
    pool = Mempool(chain.params, chain.genesis_hash)
    tickets = [sign_ticket(ALICE_SEED, chain.genesis_hash, bytes(32), 0, s) for s in range(1000)]
    tx = make_redeem(BOB_SEED, chain.genesis_hash, 0, tickets)
    assert len(tx.encode()) > MAX_TX_BYTES
    with pytest.raises(PolicyError, match="tx-size"):
        pool.add(tx)
