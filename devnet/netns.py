"""Nodes across hosts on one machine: a network namespace per node, veths and a bridge.

``microcash-devnet up --netns N`` builds (root, Linux, iproute2)::

    host:  bridge mc<tag>br 10.250.S.1/24 ── mc<tag>v<i> (veth) ─┐
    ns mc<tag>n<i>:                          eth0 10.250.S.(10+i)/24 ┘  node i

and shapes the links with ``--latency/--jitter/--loss/--rate``: by ``tc netem`` on each
namespace's ``eth0`` where the kernel has that qdisc (found by trying), otherwise by a
user-space relay in each namespace (devnet/shaper.py) in front of the node's P2P port.
Every name made is recorded in devnet.json, and ``teardown`` removes exactly those.
The host reaches each node's RPC on its namespace address through the bridge (the node
runs with ``--rpc-allow-ip`` the bridge subnet).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

P2P_PORT = 18444  # what peers dial in every namespace (each has its own port space)
NODE_P2P_PORT = 18445  # the node's own listener behind a user-space relay
RPC_PORT = 18443
ROUTE_TABLE = 100  # policy routing table that hands relayed replies back to the relay
SUBNET_BASE = "10.250"
MAX_NODES = 200


class NetnsError(Exception):
    """Building or removing the namespaced network failed; the message says what."""


@dataclass(frozen=True)
class Shaping:
    """Requested link properties: ``latency``/``jitter`` ms one way, ``loss`` %, ``rate``
    a tc rate string (``10mbit``) or None; ``mode`` auto | netem | relay."""

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate: str | None = None
    mode: str = "auto"

    @property
    def wanted(self) -> bool:
        """Whether any shaping was asked for (else nodes are bound directly)."""
        return bool(self.latency or self.jitter or self.loss or self.rate) or self.mode == "relay"

    def describe(self) -> str:
        parts = [f"latency {self.latency:g} ms"]
        if self.jitter:
            parts.append(f"jitter ±{self.jitter:g} ms")
        if self.loss:
            parts.append(f"loss {self.loss:g} %")
        if self.rate:
            parts.append(f"rate {self.rate}")
        return ", ".join(parts)


def unavailable_reason() -> str | None:
    """Why namespaced devnets cannot run here (None if they can): Linux, root, ip."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root or under sudo)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (tried in a scratch namespace)."""
    if shutil.which("tc") is None:
        return False
    name = f"mcprobe{os.getpid()}"
    if _run("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    try:
        return _run("tc", "-n", name, "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                    "1ms", check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", name, check=False)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one iproute2/tc command; NetnsError with its stderr if it fails and ``check``."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done


@dataclass
class Layout:
    """Names and addresses of one namespaced devnet (all recorded in devnet.json)."""

    tag: str
    subnet: str  # e.g. "10.250.37.0/24"
    count: int
    shaping: str = "none"  # none | netem | relay: what is in force
    namespaces: list[str] = field(default_factory=list)  # made so far
    veths: list[str] = field(default_factory=list)
    bridge: str | None = None

    @property
    def bridge_name(self) -> str:
        return f"mc{self.tag}br"

    def namespace(self, i: int) -> str:
        return f"mc{self.tag}n{i}"

    def veth(self, i: int) -> str:
        return f"mc{self.tag}v{i}"

    def address(self, i: int) -> str:
        """Node ``i``'s IPv4 address (in its namespace)."""
        return str(ipaddress.ip_network(self.subnet)[10 + i])

    @property
    def bridge_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def exec_prefix(self, i: int) -> list[str]:
        """argv prefix that runs a command in node ``i``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def to_json(self) -> dict:
        return {"tag": self.tag, "subnet": self.subnet, "count": self.count,
                "shaping": self.shaping, "namespaces": self.namespaces,
                "veths": self.veths, "bridge": self.bridge}

    @classmethod
    def from_json(cls, data: dict) -> Layout:
        return cls(data["tag"], data["subnet"], data["count"], data.get("shaping", "none"),
                   list(data.get("namespaces", [])), list(data.get("veths", [])),
                   data.get("bridge"))


def plan(root: str, count: int) -> Layout:
    """Pick names (from ``root``'s path) and a free /24 for ``count`` nodes.

    Raises NetnsError if names from an earlier devnet are still there or no subnet is free.
    """
    if not 1 <= count <= MAX_NODES:
        raise NetnsError(f"--netns takes 1 to {MAX_NODES} nodes")
    digest = hashlib.sha256(str(root).encode()).hexdigest()
    tag = digest[:4]
    existing = set(_run("ip", "netns", "list").stdout.split())
    links = _run("ip", "-o", "link", "show").stdout
    if f"mc{tag}br" in links or any(name.startswith(f"mc{tag}n") for name in existing):
        raise NetnsError(f"namespaces or links mc{tag}* of an earlier devnet in {root} still "
                         "exist; run `microcash-devnet down` for it first")
    routes = _run("ip", "-4", "route", "show", "table", "all").stdout
    start = int(digest[4:8], 16) % 250
    for k in range(250):
        third = 1 + (start + k) % 250
        subnet = f"{SUBNET_BASE}.{third}.0/24"
        if f"{SUBNET_BASE}.{third}." not in routes:
            return Layout(tag, subnet, count)
    raise NetnsError(f"no free {SUBNET_BASE}.x.0/24 subnet for the devnet bridge")


def build(layout: Layout, shaping: Shaping, record=lambda: None) -> None:
    """Make the bridge, namespaces and veths of ``layout`` and set up shaping.

    ``record()`` is called after each name is made (the caller saves devnet.json), so a
    failure part-way leaves a record ``teardown`` can clean. Sets ``layout.shaping``.
    Raises NetnsError.
    """
    bridge = layout.bridge_name
    _run("ip", "link", "add", bridge, "type", "bridge")
    layout.bridge = bridge
    record()
    _run("ip", "addr", "add", f"{layout.bridge_address}/{layout.prefix}", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    for i in range(layout.count):
        ns, veth = layout.namespace(i), layout.veth(i)
        _run("ip", "netns", "add", ns)
        layout.namespaces.append(ns)
        record()
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        layout.veths.append(veth)
        record()
        _run("ip", "link", "set", veth, "master", bridge, "up")
        _run("ip", "-n", ns, "addr", "add", f"{layout.address(i)}/{layout.prefix}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
    layout.shaping = _choose_shaping(layout, shaping)
    record()
    if layout.shaping == "netem":
        for i in range(1, layout.count):
            _netem(layout, i, shaping, check=True)
    elif layout.shaping == "relay":
        for i in range(layout.count):
            ns = layout.namespace(i)
            # Replies of the node's relayed listener go back to the relay, not the wire.
            _run("ip", "-n", ns, "rule", "add", "from", layout.address(i), "sport",
                 str(NODE_P2P_PORT), "lookup", str(ROUTE_TABLE))
            _run("ip", "-n", ns, "route", "add", "local", "0.0.0.0/0", "dev", "lo",
                 "table", str(ROUTE_TABLE))


def _netem(layout: Layout, i: int, shaping: Shaping, *, check: bool) -> subprocess.CompletedProcess:
    argv = ["tc", "-n", layout.namespace(i), "qdisc", "add", "dev", "eth0", "root", "netem",
            "delay", f"{shaping.latency:g}ms"]
    if shaping.jitter:
        argv.append(f"{shaping.jitter:g}ms")
    if shaping.loss:
        argv += ["loss", f"{shaping.loss:g}%"]
    if shaping.rate:
        argv += ["rate", shaping.rate]
    return _run(*argv, check=check)


def _choose_shaping(layout: Layout, shaping: Shaping) -> str:
    """``none`` when nothing was asked, else ``netem`` if the kernel takes it on node 0's
    eth0 (left in place), else ``relay``. Raises NetnsError if ``netem`` was demanded."""
    if not shaping.wanted:
        return "none"
    if shaping.mode == "relay":
        return "relay"
    if shutil.which("tc") is not None and _netem(layout, 0, shaping, check=False).returncode == 0:
        return "netem"
    if shaping.mode == "netem":
        raise NetnsError("`tc qdisc add … netem` failed: this kernel has no netem qdisc "
                         "(use --shaper relay or auto)")
    return "relay"


def teardown(layout: Layout) -> list[str]:
    """Remove exactly the namespaces, veths and bridge ``layout`` records (processes in
    the namespaces must be stopped first). Never raises; returns what it could not remove."""
    problems = []
    existing = set(_run("ip", "netns", "list", check=False).stdout.split())
    for ns in layout.namespaces:  # deleting a namespace deletes the veth pair inside it
        if ns in existing:
            done = _run("ip", "netns", "del", ns, check=False)
            if done.returncode != 0:
                problems.append(f"namespace {ns}: {done.stderr.strip()}")
    for name in layout.veths + ([layout.bridge] if layout.bridge else []):
        if _run("ip", "link", "show", name, check=False).returncode == 0:
            done = _run("ip", "link", "del", name, check=False)
            if done.returncode != 0:
                problems.append(f"link {name}: {done.stderr.strip()}")
    return problems
