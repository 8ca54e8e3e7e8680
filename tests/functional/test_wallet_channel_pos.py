"""Two points of sale of one payee through the real ``microcash-wallet`` CLI (SPEC §16,
docs/DESIGN.md "Several points of sale of one payee").

A regtest node and two ``merchant serve ma --point-of-sale N`` processes of one key (own
stores, own ports, each the other's ``--peer-pos``). Channel 1: an honest payer pays at
both points alternately, showing the latest receipt; all vouchers are accepted, both
points converge, a SIGKILL of point 1 loses nothing; a voucher paid at point 0 while
point 1 is down reaches point 1 through the payer's receipt alone (point 0 is down
then too); point 0 closes with the whole cumulative (point 1 marks it settled). Channel 2: point 1 is SIGKILLed, the payer
pays voucher 1 at point 0, point 0 is SIGKILLed, and a copy of the payer's wallet taken
before that payment pays voucher 1 again, for another total, at point 1 (the double
spend the penalty exists for). When point 0 comes back, its durable outbox reaches
point 1 and point 1's reaches it; both find the equivocation and send the same
CHANNEL_CHEAT, and the payee receives deposit + penalty.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess

import httpx

from tests.functional.framework import PREMINE_AMOUNT, test_seed, wait_until
from tests.functional.test_wallet_flow import (Wallet, processes,  # noqa: F401
                                               run_while_mining)

DEPOSIT, PRICE, FEE = 100_000, 10, 1000  # units
BLOCKS, MARGIN, SYNC = 16, 2, 30  # channel life, close margin, sync interval (s)
GUIDANCE = ("--sync-interval", 10, "--mean-payment-interval", 1, "--price", 100,
            "--points-of-sale", 2)  # penalty 10 / 1 x 100 = 1000
PENALTY = 1000
PENALTY2 = SYNC * 100  # from --guidance-from: the points' own --sync-interval


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class PointOfSale:
    """One ``merchant serve ma --point-of-sale N`` process (restartable)."""

    def __init__(self, shop: Wallet, index: int, port: int, peer: int, processes) -> None:
        self.shop, self.index, self.port, self.peer = shop, index, port, peer
        self.url = f"http://127.0.0.1:{port}"
        self.processes = processes
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.shop.wallet_dir / f"pos{self.index}.log", "a")
        self.proc = self.shop.popen(
            "merchant", "serve", "ma", "--port", self.port, "--point-of-sale", self.index,
            "--peer-pos", f"http://127.0.0.1:{self.peer}", "--sync-interval", SYNC,
            "--channel-price", PRICE, "--close-margin", MARGIN, stdout=log,
            stderr=subprocess.STDOUT)
        log.close()
        self.processes.append(self.proc)

        def answering():
            assert self.proc.poll() is None, self.log()
            try:
                return httpx.get(self.url + "/v1/status", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(answering, timeout=30, interval=0.1, description=f"point {self.index}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return (self.shop.wallet_dir / f"pos{self.index}.log").read_text()

    def channel(self, cid: str) -> dict:
        channels = httpx.get(self.url + "/v1/channels", timeout=5).json()["channels"]
        return next((c for c in channels if c["channel_id"] == cid), {})


def test_two_points_of_sale_receipts_close_and_cheat(nodes_factory, tmp_path,
                                                     processes):  # noqa: F811
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    shop = Wallet(tmp_path / "shop", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = shop.run("key", "new", "ma", "--empty-passphrase").stdout.strip()
    pa, pb = _free_ports(2)
    zero, one = PointOfSale(shop, 0, pa, pb, processes), PointOfSale(shop, 1, pb, pa, processes)
    zero.start()
    one.start()

    # -- two channels, the penalty from seed 003's guidance, explained; the second with
    # T^ and the number of points read from a point of sale (30 s / 1 s x 100 units)
    opened = [run_while_mining(node, cust, processes, "channel", "open", "cust", "--payee",
                               addr, "--deposit", f"{DEPOSIT}u", *guidance, "--blocks", BLOCKS)
              for guidance in (GUIDANCE, ("--guidance-from", one.url, *GUIDANCE[2:6]))]
    (c1, c2), expiry = [o["channel_id"] for o in opened], opened[0]["expiry_height"]
    assert [o["penalty"] for o in opened] == [PENALTY, PENALTY2]
    assert "with 2 points of sale" in opened[0]["penalty_explanation"]
    assert "T^ = 30 s" in opened[1]["penalty_explanation"]
    cheater = Wallet(tmp_path / "cheater", node.datadir)  # the payer's wallet, kept aside
    shutil.copytree(cust.wallet_dir, cheater.wallet_dir)

    # -- channel 1: honest payments alternating between the points, receipts shown
    for n, (pos, amount) in enumerate([(zero, 100), (one, 100), (zero, 100), (one, 150)], 1):
        paid = cust.json("channel", "pay", "cust", c1, "--amount", amount, "--to", pos.url)
        assert (paid["k"], paid["accepted"], paid["receipt"]["pos"]) == (n, True, pos.index)
    assert paid["cumulative"] == 450
    for pos in (zero, one):
        wait_until(lambda: (pos.channel(c1).get("k"), pos.channel(c1).get("cumulative"))
                   == (4, 450), timeout=10, description=f"point {pos.index} at voucher 4")

    # -- point 1 down: channel 1 voucher 5 and channel 2 voucher 1 at point 0, then point
    # 0 down too, its pushes to point 1 still queued
    one.kill()
    paid = cust.json("channel", "pay", "cust", c1, "--amount", 100, "--to", zero.url)
    assert (paid["k"], paid["cumulative"]) == (5, 550)
    paid = cust.json("channel", "pay", "cust", c2, "--amount", 100, "--to", zero.url)
    assert (paid["k"], paid["cumulative"]) == (1, 100)
    zero.kill()
    one.start()
    assert (one.channel(c1)["k"], one.channel(c1)["cumulative"]) == (4, 450)  # SIGKILL-safe
    # channel 1: the receipt of voucher 5 tells point 1 what it missed
    paid = cust.json("channel", "pay", "cust", c1, "--amount", 100, "--to", one.url)
    assert (paid["k"], paid["cumulative"], paid["receipt"]["pos"]) == (6, 650, 1)
    # channel 2: voucher 1 again, for 10, at point 1 by the rolled-back wallet
    double = cheater.json("channel", "pay", "cust", c2, "--amount", 10, "--to", one.url)
    assert (double["k"], double["cumulative"], double["accepted"]) == (1, 10, True)
    assert node.rpc.call("getrawmempool") == []
    # point 0 comes back: the points exchange state and both prove the equivocation
    zero.start()
    wait_until(lambda: len(node.rpc.call("getrawmempool")) == 1, timeout=30,
               description="the CHANNEL_CHEAT")
    for pos in (zero, one):
        wait_until(lambda: pos.channel(c2).get("status") == "cheating", timeout=15,
                   description=f"point {pos.index} proving the cheat")
    node.generate(2)
    assert node.rpc.call("getchannel", c2) is None
    for pos in (zero, one):
        wait_until(lambda: pos.channel(c2).get("status") == "cheated", timeout=30,
                   description=f"point {pos.index}: channel 2 cheated")

    # -- channel 1: point 0 closes at expiry_height - 1 - margin; point 1 settles
    close_round = expiry - 1 - MARGIN
    node.generate(close_round - 1 - node.getinfo()["height"])
    wait_until(lambda: len(node.rpc.call("getrawmempool")) == 1, timeout=30,
               description="point 0's CHANNEL_CLOSE")
    node.generate(3)
    assert node.rpc.call("getchannel", c1) is None and node.getinfo()["height"] < expiry
    wait_until(lambda: zero.channel(c1).get("status") == "closed", timeout=30,
               description="channel 1 closed by point 0")
    wait_until(lambda: one.channel(c1).get("status") == "settled", timeout=30,
               description="channel 1 settled at point 1")
    assert zero.channel(c1)["cumulative"] == 650
    assert shop.json("balance", "ma")["balance"] == 650 + DEPOSIT + PENALTY2
    assert cust.json("balance", "cust")["balance"] == (
        PREMINE_AMOUNT - 2 * FEE - 650 - DEPOSIT - PENALTY2)
    shown = json.loads(shop.run("merchant", "status", "ma", "--point-of-sale", 1,
                                "--json").stdout)
    assert {c["channel_id"]: c["status"] for c in shown["channels"]} == {
        c1: "settled", c2: "cheated"}
