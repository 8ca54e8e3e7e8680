"""Merchant terms and TLS through the real ``microcash-wallet`` CLI (docs/DESIGN.md,
"Merchant terms and TLS").

A regtest node; merchants run ``merchant serve`` with terms options (and, in the second
test, with a certificate of a local CA made by ``devnet.ca``). The terms are published at
``GET /v1/terms``; tickets of an escrow outside them are refused as ``terms-not-met``
with a detail naming the term; ``escrow create --for-merchant`` picks parameters that
meet every merchant's terms, or names the term that cannot be met. A TLS merchant is
reached with ``--cacert`` and refused, with a clear error, under a wrong CA.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from fractions import Fraction

import httpx

from consensus.ticket import sign_ticket
from devnet.ca import make_local_ca
from tests.functional.framework import test_seed, wait_until
from tests.functional.test_wallet_flow import (Wallet, processes, run_while_mining,  # noqa: F401
                                               start_merchant)

TKT_RATE = 4


def _post(url: str, tickets: list, **kwargs) -> dict:
    reply = httpx.post(url + "/v1/tickets", content=b"".join(t.encode() for t in tickets),
                       headers={"Content-Type": "application/octet-stream"}, timeout=10,
                       **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _wallets(node, tmp_path):
    cust = Wallet(tmp_path / "customer", node.datadir)
    shops = Wallet(tmp_path / "shops", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    return cust, shops


def test_terms_published_enforced_and_met_by_for_merchant(nodes_factory, tmp_path, processes):
    node = nodes_factory.start_node()
    cust, shops = _wallets(node, tmp_path)
    addr = {n: shops.run("key", "new", n, "--empty-passphrase").stdout.strip()
            for n in ("ma", "mb", "mc")}
    url = {"ma": start_merchant(shops, "ma", processes, "--price", 10, "--max-beta", 40,
                                "--min-lifetime", 4, "--min-penalty-margin", 50),
           "mb": start_merchant(shops, "mb", processes, "--price", 8, "--min-p", "1/8"),
           "mc": start_merchant(shops, "mc", processes, "--max-p", "1/8")}
    genesis = node.getinfo()["genesis_hash"]

    # -- the document
    terms = httpx.get(url["ma"] + "/v1/terms", timeout=5).json()
    assert terms == {"version": 1, "merchant": addr["ma"], "chain": "regtest",
                     "genesis_hash": genesis, "price": 10, "p_min": None, "p_max": [1, 1],
                     "beta_min": 1, "beta_max": 40, "min_lifetime": 4,
                     "min_penalty_margin": 50}

    # -- an escrow outside ma's terms (beta 1000 > 40): its tickets are refused, with why
    plain = run_while_mining(node, cust, processes, "escrow", "create", "cust", "--merchant",
                             addr["ma"], "--beta", 1000, "--p", "1/2", "--tkt-rate", TKT_RATE,
                             "--rounds", 4, "--draw-len", 2)
    eid = bytes.fromhex(plain["escrow_id"])
    reply = _post(url["ma"], [sign_ticket(test_seed(0), bytes.fromhex(genesis), eid, 0, 0)])
    assert reply == {"accepted": 0, "rejected": [{
        "index": 0, "reason": "terms-not-met",
        "detail": "beta = 1000 units is above the largest accepted beta 40"}]}

    # -- --for-merchant: parameters meeting ma's and mb's terms, then tickets accepted
    picked = run_while_mining(node, cust, processes, "escrow", "create", "cust",
                              "--for-merchant", url["ma"], "--for-merchant", url["mb"],
                              "--tkt-rate", TKT_RATE)
    p, beta = Fraction(picked["win_num"], picked["win_den"]), picked["beta"]
    assert [m["address"] for m in picked["merchants"]] == [addr["ma"], addr["mb"]]
    assert p * beta >= 10 and beta <= 40 and p >= Fraction(1, 8)
    assert picked["l_esc"] >= 4
    assert picked["penalty_amount"] >= picked["min_penalty"] * 3 // 2 > 0
    eid = picked["escrow_id"]
    node.generate(picked["start"] - 1 - node.getinfo()["height"])
    for index, name in enumerate(("ma", "mb")):
        issued = cust.json("ticket", "issue", "cust", eid, "--merchant-index", index,
                           "--count", 2, "--to", url[name])
        assert (issued["accepted"], issued["rejected"]) == (2, []), issued

    # -- terms that cannot all be met: the term, the merchants and why
    clash = cust.run("escrow", "create", "cust", "--for-merchant", url["ma"],
                     "--for-merchant", url["mc"], "--tkt-rate", TKT_RATE, ok=False)
    assert clash.returncode == 1
    assert clash.stderr.strip().splitlines()[-1] == (
        f"error: cannot meet the merchants' terms: the price 10 units per ticket of "
        f"{url['ma']} needs p x beta >= 10, but p <= 1/8 ({url['mc']}) and beta <= 40 "
        f"({url['ma']}) give at most 5")
    short = cust.run("escrow", "create", "cust", "--for-merchant", url["ma"], "--tkt-rate",
                     TKT_RATE, "--rounds", 2, ok=False)
    assert "--rounds 2 is below the lifetime 4 rounds that " + url["ma"] in short.stderr
    margin = cust.run("escrow", "create", "cust", "--for-merchant", url["ma"], "--tkt-rate",
                      TKT_RATE, "--penalty", 1, ok=False)
    assert "--penalty 1 is below the" in margin.stderr and "50% margin" in margin.stderr
    assert len(node.rpc.call("getrawmempool")) == 0  # nothing was sent


def _start_tls_merchant(shops: Wallet, name: str, processes, ca, cacert) -> str:
    """``merchant serve NAME --tls-cert/--tls-key``; its https URL once it answers."""
    log = open(shops.wallet_dir / f"{name}.log", "w")
    proc = shops.popen("merchant", "serve", name, "--port", "0", "--price", 5,
                       "--tls-cert", ca.server_cert, "--tls-key", ca.server_key,
                       stdout=log, stderr=subprocess.STDOUT)
    log.close()
    processes.append(proc)
    service = shops.wallet_dir / "merchants" / name / "service.json"
    context = ssl.create_default_context(cafile=str(cacert))

    def answering():
        assert proc.poll() is None, (shops.wallet_dir / f"{name}.log").read_text()
        try:
            url = json.loads(service.read_text())["url"]
            return httpx.get(url + "/v1/status", timeout=2, verify=context
                             ).status_code == 200 and url
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return None
    return wait_until(answering, timeout=30, interval=0.1, description=f"{name} serving")


def test_tls_merchant_verified_with_cacert(nodes_factory, tmp_path, processes):
    node = nodes_factory.start_node()
    cust, shops = _wallets(node, tmp_path)
    addr = shops.run("key", "new", "mt", "--empty-passphrase").stdout.strip()
    ca = make_local_ca(tmp_path / "ca")
    other = make_local_ca(tmp_path / "other-ca", "someone else's CA")
    url = _start_tls_merchant(shops, "mt", processes, ca, ca.cacert)
    assert url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=False) as plain:  # it speaks TLS only
        assert plain.get(url + "/v1/terms", timeout=5).json()["merchant"] == addr

    # terms read and tickets delivered over verified TLS
    picked = run_while_mining(node, cust, processes, "escrow", "create", "cust",
                              "--for-merchant", url, "--tkt-rate", TKT_RATE, "--rounds", 2,
                              "--cacert", ca.cacert)
    assert [m["address"] for m in picked["merchants"]] == [addr]
    node.generate(picked["start"] - 1 - node.getinfo()["height"])
    issued = cust.json("ticket", "issue", "cust", picked["escrow_id"], "--merchant-index", 0,
                       "--count", 3, "--to", url, "--cacert", ca.cacert)
    assert (issued["accepted"], issued["rejected"]) == (3, [])
    status = shops.json("merchant", "status", "mt", "--cacert", ca.cacert)
    assert status["source"] == url and status["escrows"][picked["escrow_id"]]["held"] == 3

    # a certificate from a CA the wallet was not told to trust: refused, and said so
    wrong = cust.run("ticket", "issue", "cust", picked["escrow_id"], "--merchant-index", 0,
                     "--count", 1, "--to", url, "--cacert", other.cacert, ok=False)
    assert wrong.returncode == 1
    port = url.rsplit(":", 1)[1]
    assert f"TLS certificate of 127.0.0.1:{port} not trusted" in wrong.stderr
    assert f"by the CA file {other.cacert}" in wrong.stderr and "--cacert FILE" in wrong.stderr
    system = cust.run("escrow", "create", "cust", "--for-merchant", url, "--tkt-rate",
                      TKT_RATE, "--rounds", 2, ok=False)
    assert system.returncode == 1
    assert "not trusted" in system.stderr and "the system trust store" in system.stderr
