"""Tests of the functional framework itself, against a stand-in node process.

The stand-in (``FAKE_NODE`` below) speaks just enough of SPEC §12.1 — ``ports.json``,
the ``.cookie`` file, JSON-RPC ``getinfo`` / ``getpeerinfo`` / ``stop`` over HTTP Basic
auth — for start-up, shutdown, escalation and crash handling to be checked without the
real node. Pure helpers (keys, genesis, ports and cookie parsing, waits) are tested
directly.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
from nacl.signing import SigningKey

from tests.functional import framework
from tests.functional.framework import (
    FrameworkError,
    NodeGroup,
    TestNode,
    assert_rpc_error,
    make_genesis,
    read_cookie,
    read_ports,
    test_address,
    test_pubkey,
    test_seed,
    wait_until,
)
from wallet.rpcclient import RpcError

pytestmark = pytest.mark.timeout(60)

FAKE_NODE = r'''
"""Stand-in node for framework tests; behaviour chosen by $FAKE_NODE_MODE."""
import base64, json, os, signal, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

mode = os.environ.get("FAKE_NODE_MODE", "normal")
args = sys.argv[1:]
datadir = args[args.index("--datadir") + 1]
os.makedirs(datadir, exist_ok=True)
print("fake node starting in", mode, "mode", flush=True)
with open(os.path.join(datadir, "node.log"), "a") as log:
    log.write("fake node log line\n")
if mode == "crash":
    print("boom: fake start-up failure", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

password = "pw%d" % os.getpid()
expected = "Basic " + base64.b64encode(("__cookie__:" + password).encode()).decode()
cookie = os.path.join(datadir, ".cookie")
stopping = threading.Event()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_POST(self):
        if self.headers.get("Authorization") != expected:
            self.send_response(401); self.end_headers(); return
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method = req["method"]
        if method == "getinfo":
            reply = {"result": {"chain": "regtest", "height": 0, "best_hash": "00" * 32}}
        elif method == "getpeerinfo":
            reply = {"result": []}
        elif method == "stop":
            reply = {"result": True}
            if mode != "stubborn":
                stopping.set()
        else:
            reply = {"error": {"code": -26, "message": "bad-nonce"}}
        body = json.dumps(dict(reply, jsonrpc="2.0", id=req.get("id"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = HTTPServer(("127.0.0.1", 0), Handler)
p2p = socket.socket(); p2p.bind(("127.0.0.1", 0)); p2p.listen()
with open(cookie, "w") as f:
    f.write("__cookie__:" + password)
tmp = os.path.join(datadir, "ports.json.tmp")
with open(tmp, "w") as f:
    json.dump({"p2p": p2p.getsockname()[1], "rpc": server.server_address[1]}, f)
os.replace(tmp, os.path.join(datadir, "ports.json"))
threading.Thread(target=server.serve_forever, daemon=True).start()
stopping.wait(120)
os.unlink(cookie)
print("fake node stopped", flush=True)
sys.exit(0)
'''


class FakeNode(TestNode):
    """A TestNode whose process is the stand-in script instead of ``python -m node``."""

    __test__ = False

    def __init__(self, *args, script, mode="normal", **kwargs):
        super().__init__(*args, **kwargs)
        self.script = script
        self.extra_env["FAKE_NODE_MODE"] = mode

    def command(self, connect=(), mine=None):
        """The real argv with the stand-in script in place of ``-m node``."""
        argv = super().command(connect, mine)
        assert argv[1:3] == ["-m", "node"]
        return [sys.executable, str(self.script)] + argv[3:]


@pytest.fixture
def fake_group(tmp_path):
    """A NodeGroup of FakeNodes; every process is killed at teardown."""
    script = tmp_path / "fake_node.py"
    script.write_text(FAKE_NODE)
    group = NodeGroup(tmp_path / "nodes")

    def make(mode="normal"):
        index = len(group.nodes)
        node = FakeNode(index, group.directory / f"node{index}", group.genesis_path,
                        script=script, mode=mode)
        group.nodes.append(node)
        return node

    group.make = make
    try:
        yield group
    finally:
        group.cleanup()


# --------------------------------------------------------------------------- pure helpers


def test_keys_are_deterministic_ed25519():
    """Key i is blake3("microcash-test-key-i"); its pubkey is the Ed25519 key of that seed."""
    from blake3 import blake3

    assert test_seed(0) == blake3(b"microcash-test-key-0").digest()
    assert len(test_seed(3)) == 32 and test_seed(3) != test_seed(4)
    assert test_pubkey(2) == SigningKey(test_seed(2)).verify_key.encode()
    assert test_address(2) == test_pubkey(2).hex() and len(test_address(2)) == 64


def test_make_genesis_default_premine(tmp_path):
    """Default genesis: regtest, fixed time, 1 000 000 MCASH to keys 0..4."""
    path = make_genesis(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["chain"] == "regtest"
    assert doc["genesis_time"] == framework.GENESIS_TIME
    assert doc["premine"] == [[test_address(i), 10**14] for i in range(5)]
    assert make_genesis(tmp_path / "again").read_text() == path.read_text()


def test_make_genesis_custom_and_invalid(tmp_path):
    """Custom premine and time are written as given; negative amounts are refused."""
    path = make_genesis(tmp_path, [(test_address(7), 5)], genesis_time=42, filename="g.json")
    assert json.loads(path.read_text()) == {
        "chain": "regtest", "genesis_time": 42, "premine": [[test_address(7), 5]]}
    with pytest.raises(ValueError):
        make_genesis(tmp_path, [(test_address(7), -1)])
    with pytest.raises(ValueError):
        make_genesis(tmp_path, genesis_time=1.5)


def test_read_ports_and_cookie(tmp_path):
    """Missing, partial and malformed files read as None; good ones parse."""
    assert read_ports(tmp_path) is None and read_cookie(tmp_path) is None
    (tmp_path / "ports.json").write_text('{"p2p": 1234, "rp')
    assert read_ports(tmp_path) is None
    (tmp_path / "ports.json").write_text('{"p2p": 0, "rpc": 5}')
    assert read_ports(tmp_path) is None
    (tmp_path / "ports.json").write_text('{"p2p": 1234, "rpc": 5678}')
    assert read_ports(tmp_path) == {"p2p": 1234, "rpc": 5678}
    (tmp_path / ".cookie").write_text("user:pw")
    assert read_cookie(tmp_path) is None
    (tmp_path / ".cookie").write_text("__cookie__:s3cret\n")
    assert read_cookie(tmp_path) == ("__cookie__", "s3cret")


def test_wait_until_returns_value_and_times_out():
    """wait_until returns the first truthy value; a never-true predicate times out."""
    calls = []

    def third_time():
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert wait_until(third_time, timeout=5, interval=0.01) == 3
    start = time.monotonic()
    with pytest.raises(FrameworkError, match="timed out.*never"):
        wait_until(lambda: False, timeout=0.2, interval=0.01, description="never")
    assert time.monotonic() - start < 2


def test_assert_rpc_error():
    """Matches the exact reject reason; fails on another reason or on success."""

    def reject(reason):
        raise RpcError(-26, reason)

    assert assert_rpc_error("bad-nonce", reject, "bad-nonce").code == -26
    with pytest.raises(AssertionError, match="insufficient-funds"):
        assert_rpc_error("bad-nonce", reject, "insufficient-funds")
    with pytest.raises(AssertionError, match="returned"):
        assert_rpc_error("bad-nonce", lambda: 7)


def test_make_block_pow_and_shape():
    """make_block links to its parent, round-trips, and honours valid_pow both ways."""
    from consensus.block import Block, is_pow_valid
    from consensus.tx import make_transfer
    from consensus.vdf import verify_vdf

    genesis_hash = framework.compute_genesis_hash()
    assert len(genesis_hash) == 32 and genesis_hash == framework.compute_genesis_hash()
    parent = {"hash": genesis_hash.hex(), "height": 0, "timestamp": framework.GENESIS_TIME}
    transfer = make_transfer(test_seed(0), genesis_hash, 0, 7, test_pubkey(6), 100)
    good = framework.make_block(parent, [transfer])
    bad = framework.make_block(parent, valid_pow=False)
    for block in (good, bad):
        assert block.header.height == 1 and block.header.prev_hash == genesis_hash
        assert Block.decode(block.encode()) == block
        verify_vdf(genesis_hash, block.header.vdf, list(block.header.vdf_checkpoints), 1000, 2)
    assert is_pow_valid(good.hash(), good.header.target)
    assert not is_pow_valid(bad.hash(), bad.header.target)
    assert good.txs[0].body == [[test_pubkey(9), framework.BLOCK_REWARD + 7]]
    assert good.txs[1] == transfer


# --------------------------------------------------------------------------- processes


def test_start_rpc_stop_restart(fake_group):
    """Start waits for ports + cookie + getinfo; stop exits 0; restart picks new files."""
    node = fake_group.make()
    node.start(timeout=30)
    assert node.is_running()
    assert node.getinfo()["chain"] == "regtest"
    assert node.p2p_address == f"127.0.0.1:{node.p2p_port}"
    assert_rpc_error("bad-nonce", node.rpc.call, "sendrawtransaction", "00")
    old_cookie = read_cookie(node.datadir)
    assert node.stop(timeout=10) == 0
    assert not (node.datadir / ".cookie").exists()
    node.restart()
    assert node.is_running() and read_cookie(node.datadir) != old_cookie
    assert node.getinfo()["height"] == 0
    assert "fake node log line" in node.log_tail(5)
    assert "fake node starting" in node.log_tail(20)
    assert node.stop(timeout=10) == 0


def test_start_failure_shows_log(fake_group):
    """A node that exits during start-up fails fast with its stderr in the error."""
    node = fake_group.make("crash")
    start = time.monotonic()
    with pytest.raises(FrameworkError, match="exited with 3") as info:
        node.start(timeout=30)
    assert "boom: fake start-up failure" in str(info.value)
    assert time.monotonic() - start < 20


def test_stop_escalates_to_sigkill(fake_group, monkeypatch):
    """A node that ignores RPC stop and SIGTERM is SIGKILLed within the bounds."""
    monkeypatch.setattr(framework, "SIGNAL_TIMEOUT", 1.0)
    node = fake_group.make("stubborn")
    node.start(timeout=30)
    start = time.monotonic()
    assert node.stop(timeout=0.5) == -9
    assert not node.is_running() and time.monotonic() - start < 8


def test_kill_and_cleanup(fake_group):
    """kill() ends the process at once; the group's cleanup kills what is left."""
    first, second = fake_group.make(), fake_group.make()
    first.start(timeout=30)
    second.start(timeout=30)
    first.kill()
    assert first.returncode == -9
    assert fake_group.cleanup() == ["node 1 killed at teardown"]
    assert not second.is_running()
