"""MICROPAY through the real ``microcash-wallet`` CLI (SPEC §15).

A regtest node mined by a background thread, ``merchant serve`` (commitments, tickets,
automatic MP_CLAIM) and the payer's ``micropay escrow create`` / ``micropay pay``: many
payments with a pool of escrows, every winner claimed on chain and a fresh escrow used
after each win; then ``merchant serve`` and ``micropay pay`` SIGKILLed mid-run: after
the rerun the payer's acknowledged tickets and the merchant's stored ones agree exactly,
and the winners are still claimed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import httpx

from tests.functional.framework import PREMINE_AMOUNT, test_seed, wait_until
from tests.functional.test_wallet_flow import (CLI_TIMEOUT, Wallet, processes,  # noqa: F401
                                               run_while_mining, start_merchant,
                                               stop_merchant)

AMOUNT, WIN_BITS, FEE = 4000, 2, 1000  # units; p = 1/4, a ticket is worth 1000 units
BLOCKS, POOL = 400, 3


class Miner:
    """Generates a block every ``interval`` seconds in a thread while running."""

    def __init__(self, node, interval: float = 0.2) -> None:
        self.node, self.interval = node, interval
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.node.generate(1)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _mp(shop: Wallet) -> dict:
    return shop.json("merchant", "status", "ma")["micropay"]


def _book_rows(cust: Wallet, paid: dict) -> str:
    """The payer's raw book (no refresh) and the pay result, for a failure message."""
    doc = json.loads((cust.wallet_dir / "micropay.json").read_text())
    return str((paid, [(r["status"], r["tickets"], r["refund_height"], bool(r["pending"]))
                       for r in doc["escrows"].values()]))


def _held(url: str) -> int:
    return httpx.get(url + "/v1/mp/status", timeout=5).json()["totals"]["held"]


def test_micropay_pool_wins_claims_and_kills(nodes_factory, tmp_path, processes):  # noqa: F811
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    shop = Wallet(tmp_path / "shop", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = shop.run("key", "new", "ma", "--empty-passphrase").stdout.strip()
    url = start_merchant(shop, "ma", processes)
    merchant_proc = processes[-1]

    # -- fund the pool; the terms are remembered for the fresh escrows
    made = cust.json("micropay", "escrow", "create", "cust", "--amount", f"{AMOUNT}u",
                     "--win-bits", WIN_BITS, "--blocks", BLOCKS, "--count", POOL, "--no-wait")
    assert len(made["escrows"]) == POOL and made["expected_value"] == "1000"
    node.generate(1)
    for e in made["escrows"]:
        assert node.rpc.call("getmpescrow", e["mp_escrow_id"])["amount"] == AMOUNT

    # -- 40 payments while blocks come every 0.2 s: each win spends its escrow
    miner = Miner(node)
    miner.start()
    try:
        paid = cust.json("micropay", "pay", "cust", "--to", url, "--count", 40, "--pool", POOL,
                         "--payee", addr)
        wins = paid["wins"]
        assert paid["payments"] == 40 and wins >= 1, paid  # P(no win in 40) = 0.75^40
        assert paid["funded"] == wins, _book_rows(cust, paid)  # a fresh one after every win
        assert wins <= paid["escrows_used"] <= wins + 1  # and the next payment moved on
        status = _mp(shop)["totals"]
        assert (status["held"], status["winning"]) == (40, wins)
        for eid in paid["won_escrows"]:  # claimed on chain by the merchant's MP_CLAIM
            wait_until(lambda: node.rpc.call("getmpescrow", eid) is None, timeout=20,
                       description=f"the claim of MP escrow {eid}")
        wait_until(lambda: _mp(shop)["totals"]["claimed"] == wins, timeout=20,
                   description="the merchant's claims confirmed")
        assert shop.json("balance", "ma")["balance"] == wins * AMOUNT
        book = cust.json("micropay", "list", "cust")["escrows"]
        assert sum(r["tickets"] for r in book) == 40
        assert {r["mp_escrow_id"] for r in book if r["status"] == "claimed"} == set(
            paid["won_escrows"])
        locked = sum(AMOUNT for r in book
                     if node.rpc.call("getmpescrow", r["mp_escrow_id"]) is not None)
        assert cust.json("balance", "cust")["balance"] + locked == (
            PREMINE_AMOUNT - FEE * len(book) - wins * AMOUNT), _book_rows(cust, paid)

        # -- SIGKILL the merchant mid-run, then the payer mid-run
        for victim in ("merchant", "payer"):
            before = _held(url)
            err_path = tmp_path / f"pay-{victim}.err"
            with open(err_path, "w") as err:
                proc = cust.popen("micropay", "pay", "cust", "--to", url, "--count", 100000,
                                  "--pool", POOL, stdout=subprocess.DEVNULL, stderr=err)
            processes.append(proc)

            def under_way():
                assert proc.poll() is None, err_path.read_text()
                return _held(url) >= before + 8
            wait_until(under_way, timeout=CLI_TIMEOUT, description="payments under way")
            if victim == "merchant":
                _kill(merchant_proc)
                proc.wait(timeout=CLI_TIMEOUT)  # it cannot deliver: exits with an error
                assert proc.returncode == 1
                url = start_merchant(shop, "ma", processes)
                merchant_proc = processes[-1]
            else:
                _kill(proc)
            # the rerun first delivers the ticket left pending (if any), then pays one more
            again = cust.json("micropay", "pay", "cust", "--to", url, "--count", 1)
            assert again["payments"] == 1 and again["resent"] <= 1
            acked = sum(r["tickets"] for r in cust.json("micropay", "list")["escrows"])
            assert _held(url) == acked  # nothing acknowledged lost, nothing counted twice
            assert not any(r["pending"] for r in cust.json("micropay", "list")["escrows"])

        # -- every winner, from before and after the kills, is claimed
        def all_claimed():
            totals = _mp(shop)["totals"]
            return totals["winning"] == totals["claimed"] and totals
        totals = wait_until(all_claimed, timeout=30, description="every winner claimed")
        assert totals["moot"] == totals["failed"] == totals["expired"] == 0
        assert totals["winning"] >= wins
        assert shop.json("balance", "ma")["balance"] == totals["winning"] * AMOUNT
    finally:
        miner.stop()
    # -- escrow create --wait: prints the escrow once it is in a block
    waited = run_while_mining(node, cust, processes, "micropay", "escrow", "create", "cust",
                              "--amount", "1000u", "--win-bits", 1, "--blocks", 10)
    assert waited["status"] == "confirmed" and waited["escrows"][0]["status"] == "ready"
    assert node.rpc.call("getmpescrow", waited["escrows"][0]["mp_escrow_id"])["win_bits"] == 1
    shown = shop.run("merchant", "status", "ma").stdout
    assert f"micropay: {totals['held']} tickets held, {totals['winning']} winning" in shown
    stop_merchant(shop, "ma", merchant_proc)  # status then reads the store itself
    stored = shop.json("merchant", "status", "ma")
    assert stored["source"] == "store" and stored["micropay"]["totals"] == totals
