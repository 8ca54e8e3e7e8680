"""A real node process over JSON-RPC (issue 5): submit rate in batches of 100 (median of
``SUBMIT_ROUNDS`` fresh nodes), `generate 1` over a 10 000-transfer mempool, and
`getinfo` latency from another process meanwhile, and while the node mines and connects
a block of 30 REDEEMs × 256 tickets.

References are measured in the same run: raw libsodium verify of the same signatures.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from nacl.bindings import crypto_sign_open

from consensus import keys
from consensus.address import encode_address
from consensus.block import make_genesis
from consensus.genesis import genesis_document
from consensus.params import REGTEST
from consensus.escrow import EscrowState, compute_escrow_id, compute_t_draw
from consensus.ticket import sign_ticket
from consensus.tx import make_escrow_create, make_redeem, make_transfer

GENESIS_TIME = 1_700_000_000
PROBE = r"""
import json, sys, time, httpx
url, user, pw, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
out, end = [], time.monotonic() + seconds
with httpx.Client(auth=(user, pw), timeout=30) as c:
    while time.monotonic() < end:
        t = time.perf_counter()
        c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getinfo", "params": []})
        out.append(time.perf_counter() - t)
        time.sleep(0.005)
print(json.dumps(out))
"""


def _seed(i: int) -> bytes:
    return (i + 7).to_bytes(4, "big") * 8


def _start(datadir: Path, genesis: Path) -> tuple[subprocess.Popen, str, tuple[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "node", "--chain", "regtest", "--datadir",
                             str(datadir), "--genesis", str(genesis), "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            ports = json.loads((datadir / "ports.json").read_text())
            user, _, pw = (datadir / ".cookie").read_text().strip().partition(":")
            url = f"http://127.0.0.1:{ports['rpc']}/"
            httpx.post(url, auth=(user, pw), json={"jsonrpc": "2.0", "id": 0,
                                                   "method": "getinfo", "params": []})
            return proc, url, (user, pw)
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("node did not start")


def _percentiles(samples: list[float]) -> str:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
    return f"p50 {pick(0.5):.1f} ms  p99 {pick(0.99):.1f} ms  max {s[-1] * 1000:.1f} ms"


SUBMIT_ROUNDS = 5  # sendrawtransaction rounds, each on a fresh node with its own reference


def _submit_round(tmp: Path, genesis: Path, bodies: list[bytes], triples: list,
                  n_txs: int, keep: bool = False):
    """Start a node, post ``bodies`` (batches of 100), then time raw verify of ``triples``;
    ``(submit tx/s, raw verify/s, node)`` with the node still running when ``keep``."""
    proc, url, auth = _start(tmp, genesis)
    done = False
    try:
        with httpx.Client(auth=auth, timeout=120) as client:
            start = None
            for body in bodies:
                client.post(url, content=body, headers={"Content-Type": "application/json"})
                if start is None:  # the first batch also starts the worker processes
                    start = time.perf_counter()
            submit = (n_txs - 100) / (time.perf_counter() - start)
        t0 = time.perf_counter()
        for pk, msg, sig in triples:
            crypto_sign_open(sig + msg, pk)
        raw = len(triples) / (time.perf_counter() - t0)
        done = True
    finally:
        if not (done and keep):
            proc.terminate()
            proc.wait(timeout=30)
    return submit, raw, (proc, url, auth)


def run_all(n_txs: int = 10_000, senders: int = 100) -> None:
    """Fill a fresh node's mempool through JSON-RPC batches ``SUBMIT_ROUNDS`` times (the
    median of the per-round ratios), then mine one block over the last round's mempool
    while probing getinfo."""
    premine = [(keys.public_key(_seed(i)), 10**13) for i in range(senders)]
    params = REGTEST.with_genesis(GENESIS_TIME, premine)
    gh = make_genesis(params).hash()
    txs = [make_transfer(_seed(i % senders), gh, i // senders, 1000, bytes(32), 1 + i)
           for i in range(n_txs)]
    # The request bodies are built before the clock starts: what is timed is the node
    # taking them, not this client making transactions.
    bodies = [json.dumps([{"jsonrpc": "2.0", "id": j, "method": "sendrawtransaction",
                           "params": [tx.encode().hex()]}
                          for j, tx in enumerate(txs[i:i + 100])]).encode()
              for i in range(0, n_txs, 100)]
    triples = [(t.sender, t.signing_message(gh), t.sig) for t in txs]
    with tempfile.TemporaryDirectory() as tmp:
        genesis = Path(tmp) / "genesis.json"
        genesis.write_text(json.dumps(genesis_document("regtest", GENESIS_TIME, premine)))
        figures, references = [], []
        for round_no in range(SUBMIT_ROUNDS):
            last = round_no == SUBMIT_ROUNDS - 1
            submit, raw, (proc, url, auth) = _submit_round(
                Path(tmp) / f"node{round_no}", genesis, bodies, triples, n_txs, keep=last)
            figures.append(submit)
            references.append(raw)
        ratios = sorted(f / ref for f, ref in zip(figures, references))
        print(f"{'sendrawtransaction, batches of 100':<44} {statistics.median(figures):>10,.0f} "
              f"tx/s      raw libsodium verify     {statistics.median(references):>10,.0f}   "
              f"ratio {statistics.median(ratios):5.2f}   goal ≥ 0.5  (median of {len(ratios)} "
              f"fresh nodes; ratios " + " ".join(f"{x:.2f}" for x in ratios) + ")")
        try:
            with httpx.Client(auth=auth, timeout=120) as client:
                probe = subprocess.Popen([sys.executable, "-c", PROBE, url, auth[0], auth[1],
                                          "6"], stdout=subprocess.PIPE, text=True)
                time.sleep(0.5)
                start = time.perf_counter()
                client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "generate",
                                       "params": [1, encode_address(bytes(32))]})
                gen = time.perf_counter() - start
                samples = json.loads(probe.communicate(timeout=60)[0])
                print(f"  generate 1 over a {n_txs}-tx mempool: {gen:.3f} s; getinfo from "
                      f"another process meanwhile: {_percentiles(samples)}  (goal p99 ≤ 50 ms)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    run_redeem_latency()
    run_paper_vdf_latency()


def _call(client: httpx.Client, url: str, method: str, *params):
    reply = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                   "params": list(params)}).json()
    if reply.get("error"):
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def run_redeem_latency(n_redeems: int = 30, tickets_each: int = 256) -> None:
    """getinfo latency while the node mines and connects a block of REDEEMs."""
    owner_seed, merchant_seed = _seed(0), _seed(1)
    merchant = keys.public_key(merchant_seed)
    premine = [(keys.public_key(owner_seed), 10**13), (merchant, 10**13)]
    params = REGTEST.with_genesis(GENESIS_TIME, premine)
    gh = make_genesis(params).hash()
    creates = [make_escrow_create(owner_seed, gh, i, 0, tickets_each * 4, 10**9, 1, 1, 1,
                                  tickets_each, 1, [merchant]) for i in range(n_redeems)]
    with tempfile.TemporaryDirectory() as tmp:
        genesis = Path(tmp) / "genesis.json"
        genesis.write_text(json.dumps(genesis_document("regtest", GENESIS_TIME, premine)))
        proc, url, auth = _start(Path(tmp) / "node", genesis)
        try:
            with httpx.Client(auth=auth, timeout=300) as client:
                for tx in creates:
                    _call(client, url, "sendrawtransaction", tx.encode().hex())
                addr = encode_address(bytes(32))
                _call(client, url, "generate", 1, addr)
                ids = []
                for tx in creates:
                    info = _call(client, url, "gettransaction", tx.txid().hex())
                    ids.append(compute_escrow_id(bytes.fromhex(info["block_hash"]), tx.txid()))
                escrow = _call(client, url, "getescrow", ids[0].hex())
                t_draw = compute_t_draw(params, EscrowState.from_rpc(escrow), 0)
                height = _call(client, url, "getinfo")["height"]
                if t_draw > height:
                    _call(client, url, "generate", t_draw - height, addr)
                for eid in ids:
                    tickets = [sign_ticket(owner_seed, gh, eid, 0, s) for s in range(tickets_each)]
                    _call(client, url, "sendrawtransaction",
                          make_redeem(merchant_seed, gh, 0, tickets).encode().hex())
                probe = subprocess.Popen([sys.executable, "-c", PROBE, url, auth[0], auth[1],
                                          "5"], stdout=subprocess.PIPE, text=True)
                time.sleep(0.5)
                start = time.perf_counter()
                _call(client, url, "generate", 1, addr)
                gen = time.perf_counter() - start
                samples = json.loads(probe.communicate(timeout=60)[0])
                mempool = _call(client, url, "getinfo")["mempool"]
                print(f"  generate 1 of {n_redeems} REDEEMs × {tickets_each} tickets: {gen:.2f} s "
                      f"(left in pool {mempool}); getinfo meanwhile: {_percentiles(samples)}  "
                      f"(goal p99 ≤ 50 ms)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


# A node process with the regtest profile but the paper profile's VDF (2 000 000
# iterations, 16 checkpoints): paper-difficulty PoW is too slow to mine for a bench, while
# the VDF work per block (the next template's evaluation, the block's verification) is the
# paper chain's own. Only this launcher changes the profile; the node code is unchanged.
PAPER_VDF_NODE = r"""
import dataclasses, sys
import consensus.params as P
P.PROFILES["regtest"] = dataclasses.replace(
    P.REGTEST, vdf_iterations=P.PAPER.vdf_iterations, vdf_checkpoints=P.PAPER.vdf_checkpoints)
from node.main import cli
sys.argv[0] = "node"
cli()
"""


def run_paper_vdf_latency(blocks: int = 3) -> None:
    """getinfo latency from another process while the node evaluates and verifies
    paper-profile VDFs (2 000 000 iterations): ``generate 1`` ``blocks`` times, each one
    computing the next template's VDF and verifying the new block's VDF segments."""
    with tempfile.TemporaryDirectory() as tmp:
        datadir = Path(tmp) / "node"
        proc = subprocess.Popen([sys.executable, "-c", PAPER_VDF_NODE, "--chain", "regtest",
                                 "--datadir", str(datadir), "--log-level", "WARNING"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url, auth = _wait_rpc(proc, datadir)
            with httpx.Client(auth=auth, timeout=300) as client:
                probe = subprocess.Popen([sys.executable, "-c", PROBE_UNTIL, url, auth[0],
                                          auth[1], str(Path(tmp) / "done")],
                                         stdout=subprocess.PIPE, text=True)
                time.sleep(0.5)
                addr = encode_address(bytes(32))
                times = []
                for _ in range(blocks):
                    start = time.perf_counter()
                    _call(client, url, "generate", 1, addr)
                    times.append(time.perf_counter() - start)
                (Path(tmp) / "done").write_text("")
                samples = json.loads(probe.communicate(timeout=60)[0])
                print(f"  paper VDF (2 000 000 iterations): generate 1 ×{blocks}: "
                      + ", ".join(f"{t:.2f} s" for t in times)
                      + f"; getinfo from another process meanwhile ({len(samples)} calls): "
                      f"{_percentiles(samples)}  (goal p99 ≤ 50 ms)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


PROBE_UNTIL = r"""
import json, os, sys, time, httpx
url, user, pw, done = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
out, end = [], time.monotonic() + 600
with httpx.Client(auth=(user, pw), timeout=30) as c:
    while time.monotonic() < end and not os.path.exists(done):
        t = time.perf_counter()
        c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getinfo", "params": []})
        out.append(time.perf_counter() - t)
        time.sleep(0.005)
print(json.dumps(out))
"""


def _wait_rpc(proc: subprocess.Popen, datadir: Path) -> tuple[str, tuple[str, str]]:
    """The RPC url and cookie of a node process once it answers getinfo."""
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with status {proc.returncode}")
        try:
            ports = json.loads((datadir / "ports.json").read_text())
            user, _, pw = (datadir / ".cookie").read_text().strip().partition(":")
            url = f"http://127.0.0.1:{ports['rpc']}/"
            httpx.post(url, auth=(user, pw), json={"jsonrpc": "2.0", "id": 0,
                                                   "method": "getinfo", "params": []})
            return url, (user, pw)
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("node did not start")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_all()
