"""Nodes across hosts: 5 nodes in their own network namespaces, 100 ms links with 1 % loss.

``microcash-devnet up --netns`` as the launcher API: the nodes converge to one tip and
one state hash over shaped links, a TRANSFER confirms everywhere, and an escrow with two
merchant services, tickets, a draw and the redeems runs through (the demo's steps, on a
small schedule). Needs root, Linux and iproute2 (CI runs as root); skipped otherwise.
Every namespace, veth and bridge is removed afterwards, also on failure.
"""

from __future__ import annotations

import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import pytest

from consensus.address import encode_address
from consensus.params import COIN
from consensus.tx import make_transfer
from devnet import netns
from devnet.demo import Merchant, MERCHANTS, EscrowPlan, Scenario
from devnet.keys import dev_address, dev_seed
from devnet.launcher import Devnet, wait_until
from devnet.progress import Progress
from wallet.customer.issuer import TicketIssuer

pytestmark = pytest.mark.timeout(150)

REASON = netns.unavailable_reason()
BLOCK_SECONDS = 1.0  # the test mines on node0 at this pace (regtest would run far ahead)
PLAN = EscrowPlan("customer", beta=COIN // 100, p=Fraction(1, 10), tkt_rate=20, draw_len=1,
                  rounds=2)  # 2 winners per draw, 40 tickets


def _ours_left(tag: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [w for w in (names + links).split() if w.startswith(f"mc{tag}")]


class _Miner(threading.Thread):
    """Mines one block on ``node`` every BLOCK_SECONDS (RPC generate) until stopped."""

    def __init__(self, node) -> None:
        super().__init__(daemon=True)
        self.node, self.halt, self.errors = node, threading.Event(), []

    def run(self) -> None:
        address = encode_address(dev_address("miner"))
        with self.node.client(timeout=30) as client:
            while not self.halt.wait(BLOCK_SECONDS):
                try:
                    client.generate(1, address)
                except Exception as exc:  # reported by the test
                    self.errors.append(exc)
                    return


def _converged(nodes) -> bool:
    hashes = set()
    for node in nodes:
        with node.client(timeout=10) as client:
            hashes.add(tuple(sorted(client.getstatehash().items())))
    return len(hashes) == 1


@pytest.mark.skipif(REASON is not None, reason=f"namespaced devnet unavailable: {REASON}")
def test_five_namespaced_nodes_with_latency_and_loss_run_the_scenario(tmp_path: Path) -> None:
    lines: list[str] = []
    devnet = Devnet(tmp_path / "devnet", chain="regtest")
    scenario = None
    miner = None
    try:
        nodes = devnet.up(5, miners=0, netns=netns.Shaping(latency=100, loss=1), workers=0,
                          log=lines.append)
        layout = devnet.layout()
        assert layout is not None and layout.shaping in ("netem", "relay")
        assert any("links shaped by tc netem" in line or "shaped in user space" in line
                   for line in lines), lines
        assert len({n.host for n in nodes}) == 5  # one address per namespace
        scenario = Scenario(devnet, nodes, Progress(interactive=False, say=lines.append))
        miner = _Miner(nodes[0])
        miner.start()
        scenario.wait_height(4, "first blocks", timeout=30)
        # Peers see each other's real namespace addresses (the relay is transparent).
        with nodes[0].client() as client:
            peer_ips = {p["address"].rsplit(":", 1)[0] for p in client.getpeerinfo()}
        assert peer_ips <= {n.host for n in nodes[1:]} and peer_ips, peer_ips

        # A TRANSFER sent to node1 confirms on node4.
        rpc = scenario.customer_rpc
        nonce = rpc.getaccount(dev_address("customer").hex())["nonce"]
        tx = make_transfer(dev_seed("customer"), scenario.genesis_hash, nonce, 0,
                           dev_address("merchant-b"), 12345)
        txid = rpc.sendrawtransaction(tx.encode().hex())
        wait_until(lambda: (scenario.merchant_rpc.gettransaction(txid) or {}).get("status")
                   == "confirmed", 40, "the transfer to confirm on node4")

        # An escrow, tickets to two merchant services, a draw and the redeems.
        for name in MERCHANTS:
            scenario.merchants.append(Merchant(name, devnet.wallet_dir,
                                               scenario.merchant_node.datadir, devnet.root))
        eid, escrow = scenario.confirm_escrow(scenario.create_escrow(PLAN))
        with TicketIssuer(devnet.root / "issuer") as issuer:
            held = scenario.issue_rounds(issuer, eid, escrow)
        draws = scenario.show_draws(eid, escrow)
        winners = set().union(*map(set, draws.values()))
        for index, merchant in enumerate(scenario.merchants):
            expected = len(winners & held[index])
            wait_until(lambda m=merchant, e=expected: m.status().get(eid.hex(), {})
                       .get("redeemed", 0) >= e, 40, f"{merchant.name}'s redeems")
        assert scenario.facts.ok, scenario.facts.lines

        # One tip, one state hash, on all five nodes once mining stops.
        miner.halt.set()
        miner.join(30)
        assert not miner.errors, miner.errors
        wait_until(lambda: _converged(nodes), 30, "one tip and state hash on all nodes", 0.1)
    finally:
        if miner is not None:
            miner.halt.set()
        if scenario is not None:
            for merchant in scenario.merchants:
                merchant.stop()
        layout = devnet.layout()
        devnet.down(log=lines.append)
        if layout is not None:
            assert _ours_left(layout.tag) == [], "down left namespaces or links behind"


def test_shaping_options_need_netns(tmp_path: Path) -> None:
    """--latency and friends without --netns are a usage error, not silently ignored."""
    from click.testing import CliRunner

    from devnet.cli import cli
    result = CliRunner().invoke(cli, ["--dir", str(tmp_path), "up", "--latency", "50"])
    assert result.exit_code == 2 and "need --netns" in result.output
