"""A real node's /metrics over HTTP (``--http-port 0``) with its log in JSON lines."""

import json
import re

import httpx

from tests.functional.framework import test_address, wait_until
from tests.functional.rawpeer import RawPeer


def _values(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def test_metrics_of_a_running_node(nodes_factory):
    node = nodes_factory.start_node(extra_args=["--http-port", "0", "--log-format", "json"])
    ports = json.loads((node.datadir / "ports.json").read_text())
    node.generate(3, test_address(9))
    node.getinfo()
    reply = httpx.get(f"http://127.0.0.1:{ports['http']}/metrics", timeout=10)
    assert reply.status_code == 200
    values = _values(reply.text)
    assert values["microcash_height"] == 3
    assert values["microcash_blocks_connected_total"] == 3
    assert values["microcash_block_connect_seconds_count"] == 3
    assert values['microcash_rpc_request_seconds_count{method="generate"}'] >= 1
    assert values['microcash_rpc_request_seconds_count{method="getinfo"}'] >= 1
    assert values["microcash_peers"] == 0 and values["microcash_banned_ips"] == 0
    # A raw peer sends garbage and is banned: the ban counter and gauge show it.
    peer = RawPeer.connect("127.0.0.1", node.p2p_port, local_host="127.0.0.2")
    try:
        peer.send_hello(bytes.fromhex(node.getinfo()["genesis_hash"]))
        peer.wait_for("hello", timeout=10)
        peer.send_raw_frame(b"\xc1" * 8)  # framed, but never valid msgpack
        assert peer.is_disconnected(10)
    finally:
        peer.close()

    def banned_once():
        scraped = _values(httpx.get(f"http://127.0.0.1:{ports['http']}/metrics", timeout=10).text)
        return scraped if scraped["microcash_bans_total"] == 1 else None

    values = wait_until(banned_once, 10, description="the ban in /metrics")
    assert values["microcash_banned_ips"] == 1
    lines = node.log_path.read_text().splitlines()
    assert all(json.loads(line)["level"] for line in lines)
    assert any("explorer and /metrics on http://127.0.0.1:" in json.loads(line)["msg"]
               for line in lines)
