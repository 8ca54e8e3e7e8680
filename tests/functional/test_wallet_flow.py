"""The whole customer / merchant flow through the real ``microcash-wallet`` CLI.

A regtest node (confirm_depth 2, d_draw 3, d_redeem 6; ``generate`` is instant) premines
to deterministic test keys. The customer imports key 0 and creates an escrow for two
merchants; each merchant runs ``merchant serve`` (ticket service + auto-redeemer). In
every issuing round the customer issues tickets to both; the draws pick winners, the
redeemers claim them, and after ``t_refund`` the customer holds exactly what the
arithmetic says. On the way a duplicate ticket is reported with ``cheat report`` and the
penalty is burned (SPEC §3, §4, §6–§9, §13).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from consensus.ticket import TICKET_SIZE, Ticket, sign_ticket
from tests.functional.framework import (PREMINE_AMOUNT, REPO_ROOT, test_address, test_seed,
                                        wait_until)
from wallet.customer.issuer import TicketIssuer, read_tickets, write_tickets

BETA = 1000  # units per winning ticket
TKT_RATE, ROUNDS, DRAW_LEN = 4, 4, 2  # p = 1/2: k = 4 winners of 8 seqnos per group
CLI_TIMEOUT = 60  # seconds one wallet command may take

_EXE = Path(sys.executable).parent / "microcash-wallet"
WALLET_CMD = [str(_EXE)] if _EXE.exists() else [sys.executable, "-m", "wallet.cli"]


class Wallet:
    """Runs ``microcash-wallet`` with one wallet directory against one node."""

    def __init__(self, wallet_dir: Path, datadir: Path) -> None:
        self.wallet_dir = wallet_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MICROCASH_")}
        self.env.update(MICROCASH_DATADIR=str(datadir), PYTHONUNBUFFERED="1",
                        PYTHONPATH=str(REPO_ROOT))

    def argv(self, args) -> list[str]:
        return WALLET_CMD + ["--wallet-dir", str(self.wallet_dir)] + [str(a) for a in args]

    def run(self, *args, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(args), env=self.env, capture_output=True, text=True,
                                timeout=CLI_TIMEOUT)
        if ok:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args) -> dict:
        return json.loads(self.run(*args, "--json").stdout)

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(args), env=self.env, text=True,
                                start_new_session=True, **kwargs)


@pytest.fixture
def processes():
    """Wallet processes started by a test; SIGTERM then SIGKILL at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def run_while_mining(node, wallet: Wallet, processes, *args) -> dict:
    """Run a ``--wait --json`` command; mine one block once its tx is in the mempool."""
    before = len(node.rpc.call("getrawmempool"))
    proc = wallet.popen(*args, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes.append(proc)
    wait_until(lambda: proc.poll() is not None
               or len(node.rpc.call("getrawmempool")) > before,
               timeout=CLI_TIMEOUT, description=f"{args[:2]} to send its transaction")
    assert proc.poll() is None, proc.communicate()
    node.generate(1)
    out, err = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, (args, out, err)
    assert "waiting for" in err
    return json.loads(out)


def start_merchant(wallet: Wallet, name: str, processes, *options) -> str:
    """``merchant serve NAME --port 0 [options]``; returns its URL once /v1/status answers."""
    log = open(wallet.wallet_dir / f"{name}.log", "w")
    proc = wallet.popen("merchant", "serve", name, "--port", "0", *options, stdout=log,
                        stderr=subprocess.STDOUT)
    log.close()
    processes.append(proc)
    service = wallet.wallet_dir / "merchants" / name / "service.json"

    def answering():
        assert proc.poll() is None, (wallet.wallet_dir / f"{name}.log").read_text()
        try:
            url = json.loads(service.read_text())["url"]
            return httpx.get(url + "/v1/status", timeout=2).status_code == 200 and url
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return None
    return wait_until(answering, timeout=30, interval=0.1, description=f"{name} serving")


def stop_merchant(wallet: Wallet, name: str, proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, (wallet.wallet_dir / f"{name}.log").read_text()
    assert not (wallet.wallet_dir / "merchants" / name / "service.json").exists()


def issue(cust: Wallet, eid: str, merchant: str, count: int, url: str) -> range:
    """Issue ``count`` tickets to the merchant at ``url``; all must be accepted."""
    result = cust.json("ticket", "issue", "cust", eid, "--merchant", merchant, "--count", count,
                       "--to", url)
    assert (result["count"], result["accepted"], result["rejected"]) == (count, count, [])
    return range(result["seqno_first"], result["seqno_last"] + 1)


def test_wallet_escrow_tickets_redeem_cheat_refund(nodes_factory, tmp_path, processes):
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    shops = Wallet(tmp_path / "shops", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = {name: shops.run("key", "new", name, "--empty-passphrase").stdout.strip()
            for name in ("ma", "mb")}
    assert cust.json("balance", "cust")["balance"] == PREMINE_AMOUNT

    # -- escrow create: amount from eq. (1), least penalty, schedule from the block
    e = run_while_mining(node, cust, processes, "escrow", "create", "cust",
                         "--merchant", addr["ma"], "--merchant", addr["mb"], "--beta", BETA,
                         "--p", "1/2", "--tkt-rate", TKT_RATE, "--rounds", ROUNDS,
                         "--draw-len", DRAW_LEN)
    eid, start, penalty = e["escrow_id"], e["start"], e["penalty_amount"]
    on_chain = node.rpc.call("getescrow", eid)
    assert on_chain["escrow_balance"] == e["escrow_amount"] == BETA * TKT_RATE * ROUNDS // 2
    assert on_chain["penalty_balance"] == penalty == e["min_penalty"]
    assert (on_chain["start"], on_chain["t_refund"]) == (start, e["t_refund"])
    assert start == e["created_height"] + 3 and e["k"] == 4
    assert [(r["round"], r["seqno_lo"]) for r in e["rounds"]] == [
        (start + i, i * TKT_RATE) for i in range(ROUNDS)]
    assert cust.json("escrow", "list")["escrows"][0]["state"] == "active"

    # -- merchants, then every issuing round while it is current
    url = {name: start_merchant(shops, name, processes) for name in ("ma", "mb")}
    merchant_procs = dict(zip(("ma", "mb"), processes[-2:]))
    twice = shops.run("merchant", "serve", "ma", "--port", "0", ok=False)
    assert twice.returncode == 1 and "another `merchant serve ma` running" in twice.stderr
    node.generate(start - 1 - node.getinfo()["height"])
    held: dict[int, set[int]] = {0: set(), 1: set()}
    out_file = tmp_path / "a.tkt"
    for i in range(ROUNDS):
        assert node.getinfo()["height"] + 1 == start + i
        held[0].update(issue(cust, eid, addr["ma"], 2, url["ma"]))
        last = i == ROUNDS - 1
        held[1].update(issue(cust, eid, addr["mb"], 1 if last else 2, url["mb"]))
        if last:  # the round's last seqno goes to a file: the cheat below duplicates it
            kept = cust.json("ticket", "issue", "cust", eid, "--merchant-index", 0,
                             "--count", 1, "--out", out_file)
            assert kept["count"] == 1 and kept["out"] == str(out_file)
        node.generate(1)
    assert sorted(held[0] | held[1]) == list(range(TKT_RATE * ROUNDS - 1))
    status = {name: shops.json("merchant", "status", name) for name in ("ma", "mb")}
    assert status["ma"]["escrows"][eid]["held"] == 8 and status["mb"]["escrows"][eid]["held"] == 7
    assert status["ma"]["source"] == url["ma"]  # asked the running service

    # -- cheat: the same seqno signed for merchant 1 too, reported by merchant mb
    seqno = read_tickets(out_file)[0].seqno
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    write_tickets(tmp_path / "b.tkt", [sign_ticket(test_seed(0), genesis, bytes.fromhex(eid),
                                                   1, seqno)])
    burned_before = node.getinfo()["burned"]
    report = run_while_mining(node, shops, processes, "cheat", "report", "mb", out_file,
                              tmp_path / "b.tkt", "--wait")
    assert (report["kind"], report["seqno"], report["broken"]) == ("duplicate", seqno, True)
    assert (report["penalty_before"], report["penalty_after"]) == (penalty, 0)
    assert report["burned"] == penalty
    assert node.getinfo()["burned"] == burned_before + penalty
    # the files swapped make a different transaction; the node refuses it on its merits
    again = shops.run("cheat", "report", "mb", tmp_path / "b.tkt", out_file, ok=False)
    assert again.returncode == 1
    assert again.stderr.splitlines()[0] == "error: node rejected the transaction: escrow-broken"
    refused = cust.run("ticket", "issue", "cust", eid, "--merchant-index", 0, "--count", 1,
                       "--out", tmp_path / "c.tkt", ok=False)
    assert refused.returncode == 1 and "broken" in refused.stderr

    # -- draws: mine block by block; after each draw let the redeemers send their REDEEMs
    expected = {0: 0, 1: 0}
    while node.getinfo()["height"] < e["t_refund"]:
        node.generate(1)
        height = node.getinfo()["height"]
        for group in e["groups"]:
            if height != group["t_draw"] + 1:
                continue
            winners = set(node.rpc.call("getdraw", eid, group["group"])["winners"])
            assert len(winners) == e["k"]
            won = {i: winners & held[i] for i in (0, 1)}
            for i in (0, 1):
                expected[i] += len(won[i])
            senders = sum(1 for i in (0, 1) if won[i])
            wait_until(lambda: len(node.rpc.call("getrawmempool")) >= senders, timeout=30,
                       description=f"REDEEMs of group {group['group']}")
    shown = cust.json("escrow", "show", eid)
    assert shown["status"] == "refunded" and shown["state"] is None

    def redeemed(name, index):
        row = shops.json("merchant", "status", name)["escrows"][eid]
        return row["redeemed"] == expected[index] and row["held"] == row["winning"] == 0 and row
    for name, index in (("ma", 0), ("mb", 1)):
        row = wait_until(lambda: redeemed(name, index), timeout=30, interval=0.3,
                         description=f"{name} redeemed its winners")
        assert row["units_redeemed"] == expected[index] * BETA
        # Losers are "losing" if the redeemer saw their draw, "expired" if it first looked
        # after the escrow was refunded (getdraw is gone then); none may be left open.
        assert row["redeemed"] + row["losing"] + row["expired"] == len(held[index])
        assert row["failed"] == 0

    # -- refund: the customer got the residue back, records are gone
    assert node.rpc.call("getescrow", eid) is None
    assert node.rpc.call("getredeemed", eid) == []
    paid = (expected[0] + expected[1]) * BETA
    assert cust.json("balance", "cust")["balance"] == PREMINE_AMOUNT - e["fee"] - paid - penalty
    assert shops.json("balance", "ma")["balance"] == expected[0] * BETA
    assert shops.json("balance", "mb")["balance"] == expected[1] * BETA
    assert cust.json("escrow", "list")["escrows"][0]["state"] == "refunded"
    for name, proc in merchant_procs.items():
        stop_merchant(shops, name, proc)
    stopped = shops.json("merchant", "status", "ma")
    assert stopped["source"] == "store" and stopped["escrows"][eid]["redeemed"] == expected[0]


def test_wallet_send_nonces_and_wait(nodes_factory, tmp_path, processes):
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    to = test_address(7)
    first = cust.json("send", "cust", to, "1.5")
    second = cust.json("send", "cust", to, "250u", "--fee", "0")
    assert (first["nonce"], second["nonce"]) == (0, 1)  # the second counts the first
    assert len(node.rpc.call("getrawmempool")) == 2
    node.generate(1)
    third = run_while_mining(node, cust, processes, "send", "cust", to, "2", "--wait")
    assert (third["nonce"], third["status"]) == (2, "confirmed")
    assert node.rpc.call("getaccount", to)["balance"] == 350_000_000 + 250
    account = cust.json("balance", "cust")
    assert account["nonce"] == 3
    assert account["balance"] == PREMINE_AMOUNT - 350_000_250 - 2 * 1000
    poor = cust.run("send", "cust", to, "2000000", ok=False)
    assert poor.returncode == 1 and poor.stderr.startswith("error: insufficient funds")


class StallingMerchant:
    """A stand-in merchant service on 127.0.0.1 that acknowledges the first POST (SPEC §13
    answer, every ticket accepted) and leaves the second one unanswered, so the test can
    kill the customer while a delivery is in flight; after ``stop_stalling`` it answers
    every POST. Records the tickets it was sent."""

    STALL_LIMIT = 60.0  # seconds the second request is held at most

    def __init__(self) -> None:
        self.seqnos: list[int] = []
        self.tickets: list[bytes] = []
        self.posts = 0
        self.stalling = True
        self.release = threading.Event()
        merchant = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                merchant.seqnos += [t.seqno for t in tickets_of(body)]
                merchant.tickets += [t.encode() for t in tickets_of(body)]
                merchant.posts += 1
                if merchant.posts > 1 and merchant.stalling:
                    merchant.release.wait(merchant.STALL_LIMIT)
                    return
                data = json.dumps({"accepted": len(body) // TICKET_SIZE,
                                   "rejected": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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


def tickets_of(body: bytes) -> list[Ticket]:
    return [Ticket.decode(body[i:i + TICKET_SIZE]) for i in range(0, len(body), TICKET_SIZE)]


def test_killed_ticket_issue_loses_no_ticket(nodes_factory, tmp_path, processes):
    """Issue 6 point 5: a `ticket issue` SIGKILLed mid-delivery holds at most three chunks
    (two deliveries in flight, the next being signed); the next `ticket issue` of the
    round delivers those first (the identical tickets, re-signed) and continues right
    after the last reserved seqno: every seqno of the round reaches the merchant, none
    is issued twice with different contents."""
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    rate, chunk = 2000, 300
    e = run_while_mining(node, cust, processes, "escrow", "create", "cust",
                         "--merchant", test_address(5), "--beta", 1, "--p", "1/2",
                         "--tkt-rate", rate, "--rounds", 2, "--draw-len", 1)
    eid, start = e["escrow_id"], e["start"]
    node.generate(start - 1 - node.getinfo()["height"])  # current round: start
    stub = StallingMerchant()
    try:
        proc = cust.popen("ticket", "issue", "cust", eid, "--merchant-index", 0,
                          "--count", rate, "--chunk", chunk, "--to", stub.url,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(proc)
        wait_until(lambda: stub.posts >= 2 or proc.poll() is not None, timeout=CLI_TIMEOUT,
                   description="the second delivery to arrive")
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        with TicketIssuer(cust.wallet_dir / "issuer") as issuer:
            mark = issuer.next_seqno(bytes.fromhex(eid))
            pending = issuer.pending(bytes.fromhex(eid))
        # the first chunk was answered; the second (and maybe a third) went out unanswered
        assert sorted(stub.seqnos) in (list(range(2 * chunk)), list(range(3 * chunk)))
        assert 2 * chunk <= mark <= 3 * chunk  # three chunks in hand at most
        # the unanswered chunks (and the first, if its answer was still being read when
        # the kill came) are pending deliveries
        held = [(p.first, p.last) for p in pending]
        assert held and held[-1][1] == mark and held[0][0] in (0, chunk)
        assert held == [(f, f + chunk) for f in range(held[0][0], mark, chunk)]
        stub.stalling = False
        after = cust.json("ticket", "issue", "cust", eid, "--merchant-index", 0,
                          "--count", rate - mark, "--chunk", chunk, "--to", stub.url)
    finally:
        stub.close()
    assert after["resent"]["tickets"] == mark - held[0][0] and after["resent"]["expired"] == 0
    assert (after["round"], after["seqno_first"], after["count"]) == (start, mark, rate - mark)
    assert after["seqno_last"] == rate - 1  # the rest of the round, none reissued
    assert set(stub.seqnos) == set(range(rate))  # nothing lost
    by_seqno: dict[int, set[bytes]] = {}
    for raw in stub.tickets:
        by_seqno.setdefault(Ticket.decode(raw).seqno, set()).add(raw)
    assert all(len(versions) == 1 for versions in by_seqno.values())  # resends are identical
    with TicketIssuer(cust.wallet_dir / "issuer") as issuer:
        assert issuer.pending(bytes.fromhex(eid)) == []


def test_merchant_with_worker_processes(nodes_factory, tmp_path, processes):
    """`merchant serve --workers 2` checks signatures in two processes: tickets from
    `ticket issue` (several chunks) are all accepted, and SIGTERM stops it cleanly."""
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    shop = Wallet(tmp_path / "shop", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = shop.run("key", "new", "ma", "--empty-passphrase").stdout.strip()
    e = run_while_mining(node, cust, processes, "escrow", "create", "cust", "--merchant", addr,
                         "--beta", 1, "--p", "1/2", "--tkt-rate", 1000, "--rounds", 2,
                         "--draw-len", 1)
    node.generate(e["start"] - 1 - node.getinfo()["height"])
    url = start_merchant(shop, "ma", processes, "--workers", 2)
    result = cust.json("ticket", "issue", "cust", e["escrow_id"], "--merchant", addr,
                       "--count", 700, "--chunk", 300, "--to", url)
    assert (result["count"], result["accepted"], result["rejected"]) == (700, 700, [])
    assert shop.json("merchant", "status", "ma")["escrows"][e["escrow_id"]]["held"] == 700
    stop_merchant(shop, "ma", processes[-1])
