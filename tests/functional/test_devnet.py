"""microcash-devnet as a user runs it: up / status / down, and the full demo scenario."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devnet.launcher import Devnet

DEVNET = [sys.executable, "-m", "devnet.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*DEVNET, *args], capture_output=True, text=True, timeout=timeout)


def test_up_status_down_stops_exactly_its_processes(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    try:
        up = run("--dir", str(root), "up", "--nodes", "3", "--chain", "regtest")
        assert up.returncode == 0, up.stderr
        nodes = Devnet(root).running()
        assert len(nodes) == 3
        assert f"explorer: {nodes[0].explorer_url}" in up.stdout
        page = httpx.get(nodes[0].explorer_url, timeout=10)
        assert page.status_code == 200 and "MicroCash explorer" in page.text
        assert "microcash_height" in httpx.get(nodes[0].explorer_url + "metrics").text
        status = run("--dir", str(root), "status")
        assert status.returncode == 0, status.stderr
        lines = [l for l in status.stdout.splitlines() if l.startswith("node")]
        assert len(lines) == 3 and all("height" in l and "peers" in l for l in lines), status.stdout
        again = run("--dir", str(root), "up", "--nodes", "1", "--chain", "regtest")
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = run("--dir", str(root), "down")
    assert down.returncode == 0, down.stderr
    assert "3 node(s) stopped" in down.stdout
    assert Devnet(root).running() == []
    assert "no devnet" in run("--dir", str(tmp_path / "none"), "status").stderr


@pytest.mark.timeout(600)
def test_demo_scenario_holds(tmp_path: Path) -> None:
    """`make demo`'s scenario: 2 000 tickets, draws, redeems, refund, burned penalty."""
    demo = run("demo", "--dir", str(tmp_path / "demo"), timeout=540)
    out = demo.stdout
    assert demo.returncode == 0, out[-3000:] + demo.stderr[-2000:]
    assert "result: all facts hold" in out
    assert "[FAILED]" not in out
    assert "2000 tickets issued" in out
    assert "[ok] explorer answers at http://127.0.0.1:" in out
    assert out.rstrip().splitlines()[-1].startswith("explorer: http://127.0.0.1:")
    assert Devnet(tmp_path / "demo").running() == []
