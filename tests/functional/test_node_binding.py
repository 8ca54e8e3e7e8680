"""Listen addresses and who may call: --bind, --rpc-bind, --rpc-allow-ip, --externalip.

Only loopback addresses are used (the whole 127.0.0.0/8 is local on Linux), so the tests
run anywhere without root.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from tests.functional.framework import read_cookie, read_ports, wait_until
from tests.functional.rawpeer import RawPeer

pytestmark = pytest.mark.timeout(90)


def _post_getinfo(host: str, port: int, datadir, source: str) -> tuple[int, bytes]:
    """POST getinfo from ``source`` with the node's cookie; (HTTP status, body)."""
    user, password = read_cookie(datadir)
    import base64
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", "/", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getinfo",
                                              "params": []}),
                     {"Authorization": f"Basic {token}", "Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_bind_and_rpc_bind_listen_only_where_asked(nodes_factory):
    """A node bound to 127.0.0.2 is reachable there, not on 127.0.0.1; a peer told that
    address syncs from it; ports.json tells local tools the RPC address."""
    a = nodes_factory.start_node(extra_args=["--bind", "127.0.0.2", "--rpc-bind", "127.0.0.2"])
    assert json.loads((a.datadir / "ports.json").read_text())["rpc_host"] == "127.0.0.2"
    assert _refused("127.0.0.1", a.p2p_port) and _refused("127.0.0.1", a.rpc_port)
    a.generate(3)
    b = nodes_factory.start_node(connect=[f"127.0.0.2:{a.p2p_port}"])
    wait_until(lambda: b.getinfo()["height"] == 3, 30, description="node 1 synced from 127.0.0.2")
    assert [p["address"] for p in b.peers()] == [f"127.0.0.2:{a.p2p_port}"]


def test_rpc_allow_ip_answers_403_outside_the_networks(nodes_factory):
    """--rpc-allow-ip 127.0.0.3/32 serves a client calling from 127.0.0.3 and refuses one
    from 127.0.0.1 with HTTP 403 (before looking at credentials)."""
    node = nodes_factory.add_node(["--rpc-bind", "0.0.0.0", "--rpc-allow-ip", "127.0.0.3/32"])
    node.start(wait=False)
    wait_until(lambda: read_ports(node.datadir) and read_cookie(node.datadir), 30,
               description="node listening")
    port = read_ports(node.datadir)["rpc"]
    status, body = _post_getinfo("127.0.0.1", port, node.datadir, source="127.0.0.1")
    assert status == 403, body
    assert b"rpc-allow-ip" in body
    status, body = _post_getinfo("127.0.0.1", port, node.datadir, source="127.0.0.3")
    assert status == 200, body
    assert json.loads(body)["result"]["height"] == 0


def test_externalip_is_what_hello_and_addr_announce(nodes_factory):
    """--externalip 127.0.0.9:4242: hello carries port 4242 and the node advertises
    [127.0.0.9, 4242] in `addr`, first in its getaddr reply."""
    node = nodes_factory.start_node(extra_args=["--externalip", "127.0.0.9:4242"])
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    with RawPeer.connect("127.0.0.1", node.p2p_port, timeout=10) as peer:
        peer.send_hello(genesis)
        hello = peer.wait_for("hello")
        assert hello[4] == 4242
        assert peer.wait_for("addr") == [["127.0.0.9", 4242]]  # advertised unasked
        peer.send_msg("getaddr", [])
        assert peer.wait_for("addr")[0] == ["127.0.0.9", 4242]


@pytest.mark.parametrize("args, message", [
    (["--bind", "192.0.2.1"], "--bind 192.0.2.1: not an address of this host"),
    (["--rpc-allow-ip", "10.0.0.0/33"], "is not an IP address or CIDR"),
    (["--externalip", "example.com"], "HOST must be an IP address"),
])
def test_bad_binding_options_fail_with_one_line(nodes_factory, args, message):
    node = nodes_factory.add_node(args)
    node.start(wait=False)
    deadline = time.monotonic() + 30
    while node.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.returncode not in (None, 0)
    assert message in node.stdio_path.read_text()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
def test_ipv6_bind_and_connect(nodes_factory):
    """--bind ::1 / --rpc-bind ::1, and a peer told [::1]:PORT syncs."""
    a = nodes_factory.start_node(extra_args=["--bind", "::1", "--rpc-bind", "::1"])
    a.generate(2)
    b = nodes_factory.start_node(connect=[f"[::1]:{a.p2p_port}"])
    wait_until(lambda: b.getinfo()["height"] == 2, 30, description="node 1 synced over IPv6")
