"""Start, inspect and stop a local devnet of N node processes on 127.0.0.1 (or, with
``netns``, each node in its own network namespace: devnet/netns.py).

A devnet lives in one directory::

    <root>/devnet.json   what ``up`` started: pids, datadirs, ports
    <root>/genesis.json  genesis with the funded development keys
    <root>/wallet/       a wallet holding the development keys (empty passphrase)
    <root>/node<i>/      each node's datadir (store, cookie, ports.json, node.log)

``down`` stops exactly the processes recorded in devnet.json (checking each pid still
runs our node with that datadir, so a reused pid is never signalled), then removes the
namespaces, veths and bridge recorded there.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from consensus.address import encode_address
from consensus.genesis import genesis_document
from devnet import netns as nsnet
from devnet.progress import Progress
from devnet.keys import DEV_KEY_NAMES, dev_address, dev_premine, dev_seed
from wallet.keystore import Keystore
from wallet.rpcclient import RpcClient, RpcConnectionError, RpcError

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class DevnetError(Exception):
    """Something about the devnet went wrong; the message says what."""


@dataclass
class NodeInfo:
    """One node process of the devnet."""

    index: int
    pid: int
    datadir: Path
    p2p: int
    rpc: int
    http: int | None = None  # the explorer and /metrics (--http-port), if served
    host: str = "127.0.0.1"  # where peers dial it (its namespace address with --netns)
    namespace: str | None = None

    @property
    def explorer_url(self) -> str | None:
        """``http://127.0.0.1:PORT/`` of this node's explorer, or None."""
        return None if self.http is None else f"http://127.0.0.1:{self.http}/"

    def client(self, timeout: float = 30) -> RpcClient:
        """A JSON-RPC client for this node."""
        return RpcClient.from_datadir(self.datadir, timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Poll ``predicate`` until true; raises ``DevnetError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise DevnetError(f"timed out after {timeout:.0f}s waiting for {what}")


def _pid_runs(pid: int, marker: Path | str) -> bool:
    """True if ``pid`` is alive and its command line holds ``marker`` (a node's datadir,
    a relay's listen address) as one argument."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(marker).encode() in cmdline


class Devnet:
    """A devnet rooted at ``root`` (see module docstring)."""

    def __init__(self, root: Path, chain: str = "devnet") -> None:
        self.root = Path(root).resolve()
        self.chain = chain
        self.meta_path = self.root / "devnet.json"
        self.wallet_dir = self.root / "wallet"
        self.genesis_path = self.root / "genesis.json"

    # -- state ---------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        """Nodes recorded by ``up`` (empty if none)."""
        if not self.meta_path.exists():
            return []
        meta = json.loads(self.meta_path.read_text())
        return [NodeInfo(n["index"], n["pid"], Path(n["datadir"]), n["p2p"], n["rpc"],
                         n.get("http"), n.get("host", "127.0.0.1"), n.get("namespace"))
                for n in meta["nodes"]]

    def _meta(self) -> dict:
        return json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}

    def running(self) -> list[NodeInfo]:
        """Recorded nodes whose process still runs."""
        return [n for n in self.nodes() if _pid_runs(n.pid, n.datadir)]

    def _save(self, nodes: list[NodeInfo], layout: nsnet.Layout | None = None,
              relays: list[dict] | None = None) -> None:
        meta = {"chain": self.chain, "genesis": str(self.genesis_path),
                "wallet_dir": str(self.wallet_dir),
                "nodes": [{"index": n.index, "pid": n.pid, "datadir": str(n.datadir),
                           "p2p": n.p2p, "rpc": n.rpc, "http": n.http, "host": n.host,
                           "namespace": n.namespace} for n in nodes]}
        if layout is not None:
            meta["netns"] = layout.to_json()
            meta["relays"] = relays or []
        tmp = self.meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, self.meta_path)

    def layout(self) -> nsnet.Layout | None:
        """The namespaced network ``up --netns`` recorded, if any."""
        data = self._meta().get("netns")
        return nsnet.Layout.from_json(data) if data else None

    # -- up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Write genesis and the development wallet, once per devnet directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.genesis_path.exists():
            document = genesis_document(self.chain, int(time.time()), dev_premine())
            self.genesis_path.write_text(json.dumps(document, indent=2) + "\n")
        store = Keystore(self.wallet_dir)
        for name in DEV_KEY_NAMES:
            if not store.has(name):
                store.create(name, "", seed=dev_seed(name), allow_empty=True)

    def up(self, n: int, *, miners: int = 1, log: Callable[[str], None] = print,
           progress: Progress | None = None, netns: nsnet.Shaping | None = None,
           workers: int | None = None) -> list[NodeInfo]:
        """Start ``n`` nodes (the first ``miners`` mine to the ``miner`` key), connect them
        in a star around node 0, and wait until each has a peer. Each node on loopback
        serves its explorer and ``/metrics`` (``--http-port 0``). ``progress`` shows a bar
        per phase (default: plain lines through ``log``). With ``netns`` each node runs in
        its own network namespace with links shaped as asked (root, Linux; see
        devnet/netns.py). ``workers``: the nodes' --workers. Raises ``DevnetError``."""
        if n < 1:
            raise DevnetError("a devnet needs at least one node")
        if self.running() or self.layout() is not None:
            raise DevnetError(f"a devnet is already running in {self.root}; "
                              "run `microcash-devnet down` first")
        self.prepare()
        progress = progress or Progress(interactive=False, say=log)
        nodes: list[NodeInfo] = []
        layout: nsnet.Layout | None = None
        relays: list[dict] = []
        try:
            if netns is not None:
                reason = nsnet.unavailable_reason()
                if reason:
                    raise DevnetError(f"--netns: {reason}")
                layout = nsnet.plan(str(self.root), n)
                nsnet.build(layout, netns, record=lambda: self._save(nodes, layout, relays))
                progress.say(f"network: {n} namespaces {layout.namespace(0)}…, bridge "
                             f"{layout.bridge_name} {layout.bridge_address}/{layout.prefix}; "
                             + _shaping_line(layout.shaping, netns))
            with progress.task("starting nodes", n, unit="nodes") as started:
                for i in range(n):
                    extra: list[str] = [] if workers is None else ["--workers", str(workers)]
                    prefix: list[str] = []
                    host = "127.0.0.1"
                    if layout is None:
                        connect = [f"127.0.0.1:{nodes[0].p2p}"] if nodes else []
                    else:
                        host, prefix = layout.address(i), layout.exec_prefix(i)
                        connect = [f"{layout.address(0)}:{nsnet.P2P_PORT}"] if i else []
                        extra += _netns_node_args(layout, i)
                        if layout.shaping == "relay":
                            relays.append(self._start_relay(layout, i, netns))
                            self._save(nodes, layout, relays)
                    mine = encode_address(dev_address("miner")) if i < miners else None
                    node = self._start_node(i, connect, mine, prefix=prefix, extra=extra)
                    if layout is not None:
                        node.host, node.namespace = host, layout.namespace(i)
                        node.p2p = nsnet.P2P_PORT
                    nodes.append(node)
                    self._save(nodes, layout, relays)
                    explorer = f", explorer {node.explorer_url}" if node.explorer_url else ""
                    progress.say(f"node{i}: pid {node.pid}, p2p {host}:{node.p2p}, rpc "
                                 f"{host}:{node.rpc}{explorer}{' (mining)' if mine else ''}")
                    started.advance()
            if n > 1:
                with progress.task("connecting peers", n, unit="nodes") as connected:
                    for node in nodes:
                        wait_until(lambda node=node: self._peers(node) >= 1, START_TIMEOUT,
                                   f"node{node.index} to connect to a peer")
                        connected.advance()
        except nsnet.NetnsError as exc:
            self.down(log=lambda _msg: None)
            raise DevnetError(str(exc)) from None
        except BaseException:
            self.down(log=lambda _msg: None)
            raise
        return nodes

    def _start_relay(self, layout: nsnet.Layout, i: int, shaping: nsnet.Shaping) -> dict:
        """Start node ``i``'s user-space link shaper in its namespace (devnet/shaper.py)."""
        listen = f"{layout.address(i)}:{nsnet.P2P_PORT}"
        cmd = layout.exec_prefix(i) + [
            sys.executable, "-m", "devnet.shaper", "--listen", listen,
            "--to", f"{layout.address(i)}:{nsnet.NODE_P2P_PORT}",
            "--latency", f"{shaping.latency:g}", "--jitter", f"{shaping.jitter:g}",
            "--loss", f"{shaping.loss:g}"] + (["--rate", shaping.rate] if shaping.rate else [])
        datadir = self.root / f"node{i}"
        datadir.mkdir(parents=True, exist_ok=True)
        with open(datadir / "shaper.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        return {"index": i, "pid": proc.pid, "listen": listen}

    def _start_node(self, index: int, connect: list[str], mine: str | None, *,
                    prefix: list[str] = (), extra: list[str] = ()) -> NodeInfo:
        datadir = self.root / f"node{index}"
        datadir.mkdir(parents=True, exist_ok=True)
        (datadir / "ports.json").unlink(missing_ok=True)
        cmd = [*prefix, sys.executable, "-m", "node", "--datadir", str(datadir),
               "--chain", self.chain, "--genesis", str(self.genesis_path)]
        if not any(arg == "--p2p-port" for arg in extra):  # loopback: ports and explorer
            cmd += ["--p2p-port", "0", "--rpc-port", "0", "--http-port", "0"]
        cmd += list(extra)
        for peer in connect:
            cmd += ["--connect", peer]
        if mine:
            cmd += ["--mine", mine]
        with open(datadir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        ports_file = datadir / "ports.json"

        def ready() -> bool:
            if proc.poll() is not None:
                raise DevnetError(f"node{index} exited with status {proc.returncode}; "
                                  f"see {datadir / 'node.log'}")
            return ports_file.exists() and (datadir / ".cookie").exists()

        wait_until(ready, START_TIMEOUT, f"node{index} to listen")
        ports = json.loads(ports_file.read_text())
        return NodeInfo(index, proc.pid, datadir, ports["p2p"], ports["rpc"], ports.get("http"))

    @staticmethod
    def _peers(node: NodeInfo) -> int:
        try:
            with node.client(timeout=5) as client:
                return client.getinfo()["peers"]
        except (RpcConnectionError, RpcError):
            return 0

    # -- status and down -----------------------------------------------------------------
    def status(self) -> list[dict]:
        """Per recorded node: running?, height, tip, peers (``None`` where unknown)."""
        rows = []
        for node in self.nodes():
            row = {"node": f"node{node.index}", "pid": node.pid, "running": False,
                   "height": None, "tip": None, "peers": None, "rpc": node.rpc, "p2p": node.p2p,
                   "explorer": node.explorer_url, "host": node.host}
            if _pid_runs(node.pid, node.datadir):
                row["running"] = True
                try:
                    with node.client(timeout=5) as client:
                        info = client.getinfo()
                    row.update(height=info["height"], tip=info["best_hash"], peers=info["peers"])
                except (RpcConnectionError, RpcError):
                    pass
            rows.append(row)
        return rows

    def down(self, *, log: Callable[[str], None] = print) -> int:
        """SIGTERM every recorded node still running, SIGKILL those that linger, then stop
        the recorded relays and remove the recorded namespaces, veths and bridge;
        returns how many nodes were stopped. Safe to repeat."""
        stopped = self._stop_nodes(log)
        meta = self._meta()
        for relay in meta.get("relays", []):
            if _pid_runs(relay["pid"], relay["listen"]):
                os.kill(relay["pid"], signal.SIGTERM)
                deadline = time.monotonic() + 5
                while _pid_runs(relay["pid"], relay["listen"]) and time.monotonic() < deadline:
                    _reap(relay["pid"])
                    time.sleep(0.05)
                if _pid_runs(relay["pid"], relay["listen"]):
                    os.kill(relay["pid"], signal.SIGKILL)
            _reap(relay["pid"])
        layout = self.layout()
        if layout is not None:
            problems = nsnet.teardown(layout)
            for problem in problems:
                log(f"could not remove {problem}")
            log(f"removed {len(layout.namespaces)} namespaces, {len(layout.veths)} veths"
                f"{' and bridge ' + layout.bridge if layout.bridge else ''}")
            if not problems:
                meta.pop("netns", None)
                meta.pop("relays", None)
                tmp = self.meta_path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(meta, indent=2) + "\n")
                os.replace(tmp, self.meta_path)
        return stopped

    def _stop_nodes(self, log: Callable[[str], None]) -> int:
        alive = self.running()
        for node in alive:
            os.kill(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for node in alive:
            while _pid_runs(node.pid, node.datadir) and time.monotonic() < deadline:
                _reap(node.pid)
                time.sleep(0.1)
            if _pid_runs(node.pid, node.datadir):
                log(f"node{node.index} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                os.kill(node.pid, signal.SIGKILL)
            _reap(node.pid)
            log(f"node{node.index} (pid {node.pid}) stopped")
        return len(alive)


def _reap(pid: int) -> None:
    """Collect a child's exit status if it is ours (no zombie left behind)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _netns_node_args(layout: nsnet.Layout, i: int) -> list[str]:
    """Node ``i``'s listen/announce options inside its namespace: RPC on its address for
    the bridge subnet; P2P on the public port, or behind the relay with --externalip."""
    address = layout.address(i)
    args = ["--bind", address, "--rpc-bind", address, "--rpc-port", str(nsnet.RPC_PORT),
            "--rpc-allow-ip", layout.subnet]
    if layout.shaping == "relay":
        return args + ["--p2p-port", str(nsnet.NODE_P2P_PORT),
                       "--externalip", f"{address}:{nsnet.P2P_PORT}"]
    return args + ["--p2p-port", str(nsnet.P2P_PORT)]


def _shaping_line(mode: str, shaping: nsnet.Shaping) -> str:
    """The line saying which link shaping is in force."""
    if mode == "netem":
        return f"links shaped by tc netem ({shaping.describe()})"
    if mode == "relay":
        return (f"links shaped in user space by a relay per node ({shaping.describe()}; "
                "tc netem unavailable or not chosen; loss emulated as a TCP retransmission "
                "delay)")
    return "links unshaped"
