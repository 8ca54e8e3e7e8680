"""Functional test framework: real node processes on loopback ports.

Modelled on Bitcoin Core's ``test_framework``: a test starts ``python -m node`` processes
with temporary data directories and a shared regtest genesis, drives them through their
JSON-RPC interface (SPEC §12), and waits for them with bounded helpers
(``wait_until``, ``sync_blocks``, ``sync_mempools``) — never with bare sleeps.

Main pieces:

- ``test_seed(i)`` / ``test_pubkey(i)`` / ``test_address(i)``: fixed deterministic keys.
- ``make_genesis(directory, premine)``: writes the genesis JSON of SPEC §12.1.
- ``TestNode``: one node process (start, wait_for_rpc, stop, kill, restart, log_tail).
- ``NodeGroup``: owns every node a test starts and kills them all at teardown; used
  through the ``nodes_factory`` fixture of ``tests/functional/conftest.py``.
- ``connect_nodes``, ``sync_blocks``, ``sync_mempools``, ``wait_until``,
  ``assert_rpc_error``.

Every wait here is bounded both in time and in number of polls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


from tests.functional.chaindata import (  # noqa: F401  (re-exported for tests)
    FrameworkError,
    test_seed,
    test_pubkey,
    test_address,
    default_premine,
    make_genesis,
    compute_genesis_hash,
    make_block,
    COIN,
    BLOCK_REWARD,
    REGTEST_VDF_CHECKPOINTS,
    REGTEST_TARGET_HEX,
    ZERO_HASH_HEX,
    GENESIS_TIME,
    PREMINE_KEYS,
    PREMINE_AMOUNT,
)
from wallet.rpcclient import RpcClient, RpcConnectionError, RpcError

REPO_ROOT = Path(__file__).resolve().parents[2]


STARTUP_TIMEOUT = 60.0  # seconds for a node to listen and answer getinfo
SHUTDOWN_TIMEOUT = 30.0  # seconds for a node to exit after RPC ``stop``
SIGNAL_TIMEOUT = 10.0  # seconds to wait after SIGTERM / SIGKILL
POLL_INTERVAL = 0.05  # seconds between polls of a wait


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = POLL_INTERVAL,
    *,
    description: str | None = None,
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Bounded in time (``timeout`` seconds) and in count (``timeout / interval + 2`` polls).
    Exceptions raised by the predicate propagate. Raises FrameworkError on timeout,
    naming ``description`` (or the predicate).
    """
    deadline = time.monotonic() + timeout
    max_polls = int(timeout / interval) + 2
    for _ in range(max_polls):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    what = description or getattr(predicate, "__name__", repr(predicate))
    raise FrameworkError(f"wait_until timed out after {timeout:.1f}s: {what}")


def assert_rpc_error(reason: str, fn: Callable[..., Any], *args: Any) -> RpcError:
    """Call ``fn(*args)`` and assert it raises RpcError whose message is exactly ``reason``.

    Returns the error for further checks. Fails if ``fn`` returns normally or raises
    an RpcError with a different reject reason.
    """
    try:
        result = fn(*args)
    except RpcError as error:
        assert error.message == reason, (
            f"expected reject reason {reason!r}, got {error.message!r} (code {error.code})"
        )
        return error
    raise AssertionError(f"expected RPC error {reason!r}, call returned {result!r}")


# --------------------------------------------------------------------------- nodes


def read_ports(datadir: Path) -> dict[str, int] | None:
    """The ``{"p2p": N, "rpc": N}`` of ``<datadir>/ports.json``, or None if not (yet) there.

    A partially written or malformed file reads as None, so callers can poll it.
    """
    path = Path(datadir) / "ports.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    p2p, rpc = data.get("p2p"), data.get("rpc")
    if not (isinstance(p2p, int) and isinstance(rpc, int) and 0 < p2p < 65536 and 0 < rpc < 65536):
        return None
    return {"p2p": p2p, "rpc": rpc}


def read_cookie(datadir: Path) -> tuple[str, str] | None:
    """``(user, password)`` from ``<datadir>/.cookie`` (``__cookie__:<password>``), or None."""
    try:
        text = (Path(datadir) / ".cookie").read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    if not sep or user != "__cookie__" or not password:
        return None
    return user, password


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file, or a note if it does not exist."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))  # enough for any sane tail
            data = handle.read()
    except FileNotFoundError:
        return f"({path.name} does not exist)"
    text = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


class TestNode:
    """One ``python -m node`` process with its own data directory (regtest, loopback).

    The process's stdout and stderr go to ``<datadir>/stdio.log`` (appended across
    restarts); the node itself also logs to ``<datadir>/node.log``. Ports are chosen by
    the node (``--p2p-port 0 --rpc-port 0``) and read back from ``ports.json``.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        index: int,
        datadir: Path,
        genesis_path: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.index = index
        self.datadir = Path(datadir)
        self.genesis_path = Path(genesis_path)
        self.extra_args = list(extra_args)
        self.extra_env: dict[str, str] = {}  # added to the child's environment
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] | None = None
        self._rpc: RpcClient | None = None
        self._last_connect: list[str] = []
        self._last_mine: str | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<TestNode {self.index} {state} {self.datadir}>"

    # ---- process control

    def command(self, connect: Sequence[str] = (), mine: str | None = None) -> list[str]:
        """The argv that starts this node (SPEC §12.1)."""
        argv = [
            sys.executable, "-m", "node",
            "--datadir", str(self.datadir),
            "--chain", "regtest",
            "--genesis", str(self.genesis_path),
            "--p2p-port", "0",
            "--rpc-port", "0",
        ]
        for peer in connect:
            argv += ["--connect", peer]
        if mine is not None:
            argv += ["--mine", mine]
        return argv + self.extra_args

    def start(
        self,
        connect: Sequence[str | TestNode] = (),
        mine: str | None = None,
        *,
        wait: bool = True,
        timeout: float = STARTUP_TIMEOUT,
    ) -> TestNode:
        """Start the process; with ``wait`` also wait until its RPC answers.

        connect: ``"host:port"`` strings or running TestNodes (their p2p port on 127.0.0.1).
        mine: address to mine to continuously, or None. Raises FrameworkError if the
        node is already running or does not come up in ``timeout`` seconds.
        """
        if self.is_running():
            raise FrameworkError(f"node {self.index} is already running")
        peers = [p.p2p_address if isinstance(p, TestNode) else str(p) for p in connect]
        self.datadir.mkdir(parents=True, exist_ok=True)
        # Stale files from an earlier run would point at old ports / an old password.
        for name in ("ports.json", ".cookie"):
            (self.datadir / name).unlink(missing_ok=True)
        self.ports = None
        self._set_rpc(None)
        self._last_connect, self._last_mine = peers, mine
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        with open(self.stdio_path, "ab") as stdio:
            banner = f"==== start {time.strftime('%H:%M:%S')}: {self.command(peers, mine)}\n"
            stdio.write(banner.encode())
            stdio.flush()
            self.process = subprocess.Popen(
                self.command(peers, mine),
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                cwd=str(self.datadir),
                env=env,
                start_new_session=True,  # own process group: kill() reaches any children
            )
        if wait:
            self.wait_for_rpc(timeout)
        return self

    def is_running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process, None while it runs or before any start."""
        return None if self.process is None else self.process.poll()

    def wait_for_rpc(self, timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
        """Wait for ``ports.json``, the cookie and a successful ``getinfo``; return getinfo.

        Raises FrameworkError (with the log tail) if the process exits first or the
        deadline passes.
        """
        last_error: list[BaseException] = []

        def ready() -> dict[str, Any] | None:
            if not self.is_running():
                raise FrameworkError(
                    f"node {self.index} exited with {self.returncode} during start-up\n"
                    + self.log_tail(40)
                )
            ports = read_ports(self.datadir)
            if ports is None or read_cookie(self.datadir) is None:
                return None
            client: RpcClient | None = None
            try:
                client = RpcClient.from_datadir(self.datadir)
                info = client.call("getinfo")
            except (RpcConnectionError, RpcError, OSError, ValueError) as error:
                last_error[:] = [error]
                if client is not None:
                    client.close()
                return None
            self.ports = ports
            self._set_rpc(client)
            return info

        try:
            return wait_until(ready, timeout, description=f"node {self.index} RPC ready")
        except FrameworkError as error:
            if "timed out" not in str(error):
                raise
            detail = f" (last error: {last_error[0]!r})" if last_error else ""
            raise FrameworkError(f"{error}{detail}\n{self.log_tail(40)}") from None

    def _set_rpc(self, client: RpcClient | None) -> None:
        """Replace the RPC client, closing the old one's connections."""
        if self._rpc is not None and self._rpc is not client:
            self._rpc.close()
        self._rpc = client

    @property
    def rpc(self) -> RpcClient:
        """The RPC client of the running node (after ``wait_for_rpc``)."""
        if self._rpc is None:
            raise FrameworkError(f"node {self.index} has no RPC client; start it first")
        return self._rpc

    @property
    def p2p_port(self) -> int:
        """The P2P listening port read from ``ports.json``."""
        if self.ports is None:
            raise FrameworkError(f"node {self.index} ports unknown; start it first")
        return self.ports["p2p"]

    @property
    def rpc_port(self) -> int:
        """The RPC port read from ``ports.json``."""
        if self.ports is None:
            raise FrameworkError(f"node {self.index} ports unknown; start it first")
        return self.ports["rpc"]

    @property
    def p2p_address(self) -> str:
        """``"127.0.0.1:<p2p_port>"``, the form ``--connect`` and ``addnode`` take."""
        return f"127.0.0.1:{self.p2p_port}"

    def wait_for_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; its status or None."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> int | None:
        """Stop cleanly via RPC ``stop``; escalate to SIGTERM, then SIGKILL if needed.

        Returns the exit status (negative for a signal, as subprocess reports it), or
        None if the node was not running.
        """
        if not self.is_running():
            return self.returncode
        status = None
        if self._rpc is not None:
            try:
                self._rpc.call("stop")
            except (RpcConnectionError, RpcError, OSError):
                pass  # the node may close the connection as it goes down
            status = self.wait_for_exit(timeout)
        if status is None:
            self._signal(signal.SIGTERM)
            status = self.wait_for_exit(SIGNAL_TIMEOUT)
        if status is None:
            self.kill()
            status = self.returncode
        self._set_rpc(None)
        return status

    def kill(self) -> None:
        """SIGKILL the node's process group at once and reap it (a simulated crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGKILL)
        self.wait_for_exit(SIGNAL_TIMEOUT)
        self._set_rpc(None)

    def _signal(self, signum: int) -> None:
        """Send ``signum`` to this node's process group (its own session)."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def restart(
        self,
        connect: Sequence[str | TestNode] | None = None,
        mine: str | None = None,
        *,
        timeout: float = STARTUP_TIMEOUT,
    ) -> TestNode:
        """Stop (if running) and start again on the same datadir.

        connect: peers for the new run; None keeps those of the last start. The node
        picks new ports, so peers that connected to the old port must reconnect.
        """
        self.stop()
        peers = self._last_connect if connect is None else connect
        return self.start(connect=peers, mine=mine, timeout=timeout)

    # ---- logs

    @property
    def stdio_path(self) -> Path:
        """Where the process's stdout/stderr are written."""
        return self.datadir / "stdio.log"

    @property
    def log_path(self) -> Path:
        """The node's own log file (SPEC §12.1)."""
        return self.datadir / "node.log"

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of ``node.log`` and of the process's stdout/stderr."""
        return (
            f"---- node {self.index} node.log (last {n} lines) ----\n{_tail(self.log_path, n)}\n"
            f"---- node {self.index} stdio.log (last {n} lines) ----\n{_tail(self.stdio_path, n)}"
        )

    # ---- convenience

    def getinfo(self) -> dict[str, Any]:
        """RPC ``getinfo``."""
        return self.rpc.call("getinfo")

    def tx_status(self, txid: str) -> tuple[str, int | None] | None:
        """``(status, height)`` from RPC ``gettransaction`` (extra fields ignored), or None."""
        result = self.rpc.call("gettransaction", txid)
        return None if result is None else (result["status"], result.get("height"))

    def peers(self) -> list[dict[str, Any]]:
        """RPC ``getpeerinfo``."""
        return self.rpc.call("getpeerinfo")

    def generate(self, n: int, address: str | None = None, *, chunk: int = 50) -> list[str]:
        """Mine ``n`` blocks to ``address`` (default test key 9) in RPC calls of ``chunk``."""
        address = address or test_address(9)
        hashes: list[str] = []
        for start in range(0, n, chunk):
            hashes += self.rpc.call("generate", min(chunk, n - start), address)
        return hashes


class NodeGroup:
    """Starts nodes for one test under one directory and kills every one at teardown."""

    def __init__(self, directory: Path, premine: Iterable[tuple[str, int]] | None = None) -> None:
        self.directory = Path(directory)
        self.genesis_path = make_genesis(self.directory, premine)
        self.nodes: list[TestNode] = []

    def add_node(self, extra_args: Sequence[str] = ()) -> TestNode:
        """Create (not start) the next node, with datadir ``<directory>/node<i>``."""
        index = len(self.nodes)
        node = TestNode(index, self.directory / f"node{index}", self.genesis_path, extra_args)
        self.nodes.append(node)
        return node

    def start_node(
        self,
        connect: Sequence[str | TestNode] = (),
        mine: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> TestNode:
        """Create and start one node, waiting for its RPC."""
        return self.add_node(extra_args).start(connect=connect, mine=mine)

    def start_nodes(
        self, n: int, connect: str | Sequence[tuple[int, int]] = "chain"
    ) -> list[TestNode]:
        """Start ``n`` new nodes in parallel, wait for their RPC, then connect them.

        connect: ``"chain"`` (node i to node i-1), ``"none"``, or explicit pairs of
        indexes among the new nodes, e.g. ``[(0, 1), (2, 3)]``. Connections use
        ``connect_nodes`` (RPC ``addnode``) and are waited for.
        """
        new = [self.add_node() for _ in range(n)]
        for node in new:
            node.start(wait=False)
        for node in new:
            node.wait_for_rpc()
        if connect == "chain":
            pairs = [(i, i - 1) for i in range(1, n)]
        elif connect == "none":
            pairs = []
        elif isinstance(connect, str):
            raise ValueError(f"unknown topology {connect!r}")
        else:
            pairs = list(connect)
        for a, b in pairs:
            connect_nodes(new[a], new[b])
        return new

    def log_tails(self, n: int = 60) -> str:
        """Log tails of every node, for a failure report."""
        return "\n".join(node.log_tail(n) for node in self.nodes)

    def cleanup(self) -> list[str]:
        """Kill every node still running; return a note per node that had to be killed."""
        notes = []
        for node in self.nodes:
            if node.is_running():
                node.kill()
                notes.append(f"node {node.index} killed at teardown")
        return notes


# --------------------------------------------------------------------------- network helpers


def _peer_port(address: Any) -> int | None:
    """The port of a ``getpeerinfo`` address (``"host:port"`` or ``[host, port]``)."""
    if isinstance(address, (list, tuple)) and len(address) == 2:
        return int(address[1])
    if isinstance(address, str) and ":" in address:
        port = address.rsplit(":", 1)[1]
        return int(port) if port.isdigit() else None
    return None


def _has_outbound_to(node: TestNode, port: int) -> bool:
    """Whether ``node`` lists an outbound peer on ``port``."""
    return any(
        not peer.get("inbound") and _peer_port(peer.get("address")) == port for peer in node.peers()
    )


def _inbound_count(node: TestNode) -> int:
    """How many inbound peers ``node`` lists."""
    return sum(1 for peer in node.peers() if peer.get("inbound"))


def connect_nodes(a: TestNode, b: TestNode, timeout: float = 30.0) -> None:
    """Have ``a`` connect to ``b`` (RPC ``addnode``) and wait until both list the peer.

    ``a`` must show an outbound peer on ``b``'s p2p port and ``b`` one more inbound peer
    than before (or at least one, if ``a`` was already connected).
    """
    if _has_outbound_to(a, b.p2p_port):
        wait_until(lambda: _inbound_count(b) >= 1, timeout, description=f"node {b.index} inbound")
        return
    inbound_before = _inbound_count(b)
    assert a.rpc.call("addnode", b.p2p_address) is True
    wait_until(
        lambda: _has_outbound_to(a, b.p2p_port) and _inbound_count(b) > inbound_before,
        timeout,
        description=f"node {a.index} -> node {b.index} connected",
    )


def sync_blocks(nodes: Sequence[TestNode], timeout: float = 30.0) -> str:
    """Wait until every node reports the same ``best_hash``; return it."""

    def same_tip() -> str | None:
        tips = {node.getinfo()["best_hash"] for node in nodes}
        return tips.pop() if len(tips) == 1 else None

    try:
        return wait_until(same_tip, timeout, description="sync_blocks")
    except FrameworkError as error:
        detail = ", ".join(
            f"node {n.index}: height {i['height']} {i['best_hash'][:16]}"
            for n, i in ((n, n.getinfo()) for n in nodes)
        )
        raise FrameworkError(f"{error} ({detail})") from None


def sync_mempools(nodes: Sequence[TestNode], timeout: float = 30.0) -> set[str]:
    """Wait until every node's ``getrawmempool`` holds the same set; return it."""

    def same_pool() -> tuple[set[str]] | None:
        # A 1-tuple stays truthy when the common pool is empty.
        pools = [set(node.rpc.call("getrawmempool")) for node in nodes]
        return (pools[0],) if all(p == pools[0] for p in pools) else None

    return wait_until(same_pool, timeout, description="sync_mempools")[0]
