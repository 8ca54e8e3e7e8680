"""Payment channels through the real ``microcash-wallet`` CLI (SPEC §16).

A regtest node, ``merchant serve`` (voucher service + closer) and the payer's
``channel open`` / ``channel pay``: several payments, a SIGKILL of the merchant (nothing
acknowledged lost), a SIGKILL of ``channel pay`` after it recorded its voucher (rerun
sends the same voucher, never a second cumulative for one k), the automatic
CHANNEL_CLOSE before ``expiry_height`` and the balances; then an equivocating payer
proven with CHANNEL_CHEAT automatically.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading

import httpx

from consensus.channel import sign_voucher
from tests.functional.framework import PREMINE_AMOUNT, test_seed, wait_until
from tests.functional.test_wallet_flow import (CLI_TIMEOUT, Wallet, processes,  # noqa: F401
                                               run_while_mining, start_merchant,
                                               stop_merchant)

DEPOSIT, PRICE, FEE = 100_000, 10, 1000  # units
BLOCKS, MARGIN = 14, 2


class StallingPayee:
    """Answers ``GET /v1/channels/ID`` like a fresh payee and never answers a POST, so the
    test can SIGKILL ``channel pay`` after it recorded and sent its voucher."""

    def __init__(self, k: int, cumulative: int) -> None:
        self.posted = threading.Event()
        self.release = threading.Event()
        payee = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                data = json.dumps({"price": PRICE, "k": k, "cumulative": cumulative,
                                   "status": "open"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                payee.posted.set()
                payee.release.wait(60)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _setup(nodes_factory, tmp_path):
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    shop = Wallet(tmp_path / "shop", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = shop.run("key", "new", "ma", "--empty-passphrase").stdout.strip()
    return node, cust, shop, addr


def _channel(shop: Wallet, cid: str) -> dict:
    return next(c for c in shop.json("merchant", "status", "ma")["channels"]
                if c["channel_id"] == cid)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_channel_open_pay_kill_close(nodes_factory, tmp_path, processes):  # noqa: F811
    node, cust, shop, addr = _setup(nodes_factory, tmp_path)
    options = ("--channel-price", PRICE, "--close-margin", MARGIN)
    url = start_merchant(shop, "ma", processes, *options)

    # -- open, with seed 003's penalty guidance: 60 s / 2 s x 50 units = 1500
    t0 = node.getinfo()["height"]
    opened = run_while_mining(node, cust, processes, "channel", "open", "cust", "--payee", addr,
                              "--deposit", f"{DEPOSIT}u", "--pos-interval", 60,
                              "--seconds-per-payment", 2, "--price", 50, "--blocks", BLOCKS)
    cid, penalty, expiry = opened["channel_id"], opened["penalty"], opened["expiry_height"]
    assert penalty == 1500 and expiry == t0 + 1 + BLOCKS
    assert "floor(T^ / T~ x u2)" in opened["penalty_explanation"]
    on_chain = node.rpc.call("getchannel", cid)
    assert (on_chain["deposit"], on_chain["penalty"], on_chain["expiry_height"]) == (
        DEPOSIT, penalty, expiry)

    # -- pay three times; below the payee's price nothing is signed
    for n in range(1, 4):
        paid = cust.json("channel", "pay", "cust", cid, "--amount", 100, "--to", url)
        assert (paid["k"], paid["cumulative"], paid["accepted"]) == (n, 100 * n, True)
    cheap = cust.run("channel", "pay", "cust", cid, "--amount", PRICE - 1, "--to", url, ok=False)
    assert cheap.returncode == 1 and "nothing signed" in cheap.stderr
    assert cust.json("channel", "list")["channels"][0]["k"] == 3

    # -- SIGKILL the merchant: every acknowledged voucher is still there
    _kill(processes[0])
    url = start_merchant(shop, "ma", processes, *options)
    merchant_proc = processes[-1]
    assert (_channel(shop, cid)["k"], _channel(shop, cid)["cumulative"]) == (3, 300)

    # -- SIGKILL `channel pay` after it recorded voucher 4 (its POST is left unanswered)
    stub = StallingPayee(3, 300)
    try:
        proc = cust.popen("channel", "pay", "cust", cid, "--amount", 100, "--to", stub.url,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(proc)
        assert stub.posted.wait(CLI_TIMEOUT)
        _kill(proc)
    finally:
        stub.close()
    book = cust.json("channel", "list")["channels"][0]
    assert (book["k"], book["cumulative"], book["acked_k"]) == (4, 400, 3)
    # the rerun delivers voucher 4 = 400 unchanged first, then 5 = 500 + 100
    again = cust.json("channel", "pay", "cust", cid, "--amount", 100, "--to", url)
    assert (again["resent_k"], again["k"], again["cumulative"]) == (4, 5, 500)
    state = _channel(shop, cid)
    assert (state["k"], state["cumulative"], state["status"]) == (5, 500, "open")

    # -- the closer sends CHANNEL_CLOSE at expiry_height - 1 - margin, before expiry
    close_round = expiry - 1 - MARGIN
    node.generate(close_round - 2 - node.getinfo()["height"])
    assert node.rpc.call("getrawmempool") == []  # not yet: one round early
    node.generate(1)  # current round: close_round
    wait_until(lambda: len(node.rpc.call("getrawmempool")) == 1, timeout=30,
               description="the closer's CHANNEL_CLOSE")
    late = cust.run("channel", "pay", "cust", cid, "--amount", 100, "--to", url, ok=False)
    assert late.returncode == 1 and "nothing signed" in late.stderr
    node.generate(3)
    assert node.getinfo()["height"] < expiry
    assert node.rpc.call("getchannel", cid) is None
    wait_until(lambda: _channel(shop, cid)["status"] == "closed", timeout=30,
               description="the channel marked closed")
    assert shop.json("balance", "ma")["balance"] == 500
    assert cust.json("balance", "cust")["balance"] == PREMINE_AMOUNT - FEE - 500
    stop_merchant(shop, "ma", merchant_proc)  # status then reads the store itself
    shown = shop.run("merchant", "status", "ma").stdout
    assert f"channel {cid}: voucher 5 = 500 of {DEPOSIT} units, closed" in shown


def test_channel_equivocation_proven_automatically(nodes_factory, tmp_path,
                                                   processes):  # noqa: F811
    node, cust, shop, addr = _setup(nodes_factory, tmp_path)
    url = start_merchant(shop, "ma", processes)
    opened = run_while_mining(node, cust, processes, "channel", "open", "cust", "--payee", addr,
                              "--deposit", f"{DEPOSIT}u", "--penalty", 700, "--blocks", BLOCKS)
    cid = opened["channel_id"]
    cust.json("channel", "pay", "cust", cid, "--amount", 100, "--to", url)
    # a cheating payer signs voucher 1 again for another total (this wallet never would)
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    forged = sign_voucher(test_seed(0), genesis, bytes.fromhex(cid), 1, 50)
    reply = httpx.post(url + "/v1/vouchers", timeout=10, json={
        "channel_id": cid, "voucher": {"k": 1, "cumulative": 50, "sig": forged.sig.hex()}})
    assert reply.status_code == 200
    assert reply.json() == {"accepted": False, "reason": "equivocation"}
    wait_until(lambda: len(node.rpc.call("getrawmempool")) == 1, timeout=30,
               description="the closer's CHANNEL_CHEAT")
    node.generate(2)
    assert node.rpc.call("getchannel", cid) is None
    wait_until(lambda: _channel(shop, cid)["status"] == "cheated", timeout=30,
               description="the channel marked cheated")
    assert shop.json("balance", "ma")["balance"] == DEPOSIT + 700
    assert cust.json("balance", "cust")["balance"] == PREMINE_AMOUNT - FEE - DEPOSIT - 700
