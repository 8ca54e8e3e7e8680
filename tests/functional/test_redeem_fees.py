"""Redemption that does not lose winners (issue 8 point 3) on a real node and merchant.

The node's mempool holds at most ``POOL`` transactions (``--mempool-max-txs``). After
every block a spammer sends more transfers than fit, each paying ``SPAM_RATE`` units per
byte, so the pool is full of them whenever a REDEEM arrives: a REDEEM at fee 0 (the old
default) is either refused (``mempool-full``) or, if it came first, evicted by the next
transfer — every block, until its window closes. ``merchant serve`` (default ``--fee 0``)
must still redeem every winner inside its window: its fee comes from ``estimatefee``
(whose admission term sees the full pool) and is raised after each missed block.
"""

from __future__ import annotations

import time

import pytest

from consensus.address import decode_address
from consensus.tx import make_transfer
from tests.functional.framework import assert_rpc_error, test_address, test_seed, wait_until
from tests.functional.test_wallet_flow import (Wallet, issue, processes,  # noqa: F401
                                               run_while_mining, start_merchant)

pytestmark = pytest.mark.timeout(120)

POOL = 24            # --mempool-max-txs
SPAM_PER_BLOCK = 36  # more than fit
SPAM_RATE = 20       # units per byte the transfers pay
BETA = 10**6         # units per winning ticket: worth a real fee
TKT_RATE, ROUNDS, DRAW_LEN = 4, 2, 1  # p = 1/2: 2 winners of 4 seqnos per group


class Spammer:
    """Transfers from test key 1 at ``SPAM_RATE`` units/byte, nonces from the node."""

    def __init__(self, node) -> None:
        self.node = node
        self.seed = test_seed(1)
        self.genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
        self.sender = test_address(1)
        self.to = decode_address(test_address(7))
        self.txids: set[str] = set()
        self.refused = 0

    def fill(self) -> None:
        nonce = self.node.rpc.call("getaccount", self.sender)["nonce"]
        for i in range(SPAM_PER_BLOCK):
            probe = make_transfer(self.seed, self.genesis, nonce + i, 0, self.to, 1)
            fee = SPAM_RATE * (len(probe.encode()) + 4)
            tx = make_transfer(self.seed, self.genesis, nonce + i, fee, self.to, 1)
            try:
                self.txids.add(self.node.rpc.call("sendrawtransaction", tx.encode().hex()))
            except Exception:  # mempool-full: the pool is as full as it gets
                self.refused += 1
                break


def test_full_mempool_does_not_starve_redeems(nodes_factory, tmp_path, processes):  # noqa: F811
    began = time.monotonic()
    node = nodes_factory.start_node(extra_args=["--mempool-max-txs", str(POOL)])
    cust = Wallet(tmp_path / "customer", node.datadir)
    shop = Wallet(tmp_path / "shop", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = shop.run("key", "new", "ma", "--empty-passphrase").stdout.strip()
    e = run_while_mining(node, cust, processes, "escrow", "create", "cust", "--merchant", addr,
                         "--beta", BETA, "--p", "1/2", "--tkt-rate", TKT_RATE,
                         "--rounds", ROUNDS, "--draw-len", DRAW_LEN)
    eid, start = e["escrow_id"], e["start"]
    url = start_merchant(shop, "ma", processes)
    node.generate(start - 1 - node.getinfo()["height"])
    held = set()
    for _ in range(ROUNDS):
        held |= set(issue(cust, eid, addr, TKT_RATE, url))
        node.generate(1)
    assert len(held) == TKT_RATE * ROUNDS

    spam = Spammer(node)
    windows = {g["group"]: (g["t_draw"] + 1, g["t_expire"]) for g in e["groups"]}
    last = max(t for _, t in windows.values())
    winners: dict[int, set[int]] = {}
    starved_probe = None
    for _ in range(last + 2):  # one block per pass; bounded by the last window
        height = node.getinfo()["height"]
        for g, (first, _) in windows.items():
            if height >= first and g not in winners:
                winners[g] = set(node.rpc.call("getdraw", eid, g)["winners"]) & held
        paid = {s for s, _, _ in node.rpc.call("getredeemed", eid)}
        owed = set().union(set(), *winners.values()) - paid
        if len(winners) == len(windows) and not owed:
            break
        assert height < last, f"windows closed with winners {sorted(owed)} unpaid"
        spam.fill()  # the pool is full before the redeemer's turn (or evicts its REDEEM)
        if starved_probe is None and len(node.rpc.call("getrawmempool")) >= POOL:
            # what a fee-0 REDEEM meets: a full pool takes nothing that pays less per byte
            probe = make_transfer(test_seed(2), spam.genesis, 0, 0, spam.to, 1)
            starved_probe = assert_rpc_error("mempool-full", node.rpc.call,
                                             "sendrawtransaction", probe.encode().hex())
        if owed:  # give the redeemer its turn: a REDEEM in the pool, or a short bound
            try:
                wait_until(lambda: set(node.rpc.call("getrawmempool")) - spam.txids,
                           timeout=1.5, interval=0.05, description="a REDEEM in the pool")
            except AssertionError:
                pass  # evicted or refused this block; the redeemer raises its fee next time
        node.generate(1)
    assert starved_probe is not None and spam.refused > 0  # the pool really was full

    records = node.rpc.call("getredeemed", eid)
    by_seqno = {s: h for s, m, h in records}
    expected = set().union(*winners.values())
    assert expected and set(by_seqno) == expected, (records, winners)
    for g, won in winners.items():
        first, t_expire = windows[g]
        assert all(first <= by_seqno[s] <= t_expire for s in won), (g, records)
    # the REDEEMs paid real fees (out of the payout), never the whole payout
    balance = shop.json("balance", "ma")["balance"]
    assert 0 < balance < len(expected) * BETA
    log = (shop.wallet_dir / "ma.log").read_text()
    assert "fee" in log
    assert time.monotonic() - began < 40
