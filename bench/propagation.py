"""Block propagation and stale blocks against link latency, over namespaced devnets (issue 9).

For each size (5 and 20 nodes) and each one-way latency (0, 50, 100, 200 ms):

1. ``Devnet.up(n, netns=...)``: every node in its own network namespace, links shaped
   as ``microcash-devnet up --netns`` does (tc netem where the kernel has it, else the
   user-space relay — the same shaper for every latency, so the 0 ms run is the
   reference and the ratio isolates the latency).
2. Three nodes spread over the network race to mine: each calls ``generate 1`` after an
   exponential wait (mean ``3 × interval``), so blocks come ~``interval`` s apart in all,
   and a block found before the previous one reached its miner forks the chain.
3. Every node is watched with the ``waitfornewblock`` long-poll; a block's propagation
   time is from its ``generate`` reply to the moment the LAST node's tip reaches its
   height (main-chain blocks only). A stale block is one mined but not on the final
   main chain of node 0.

Prints p50/p90 of the propagation time and the stale rate per latency, the latency-0
figure as reference and each figure's ratio to it. Needs root and Linux (namespaces);
prints why and skips otherwise. ``python -m bench.propagation [--blocks N] ...``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from consensus.address import encode_address
from devnet import netns
from devnet.keys import dev_address
from devnet.netns import netem_available
from devnet.launcher import Devnet, DevnetError, wait_until
from wallet.rpcclient import RpcConnectionError, RpcError

LATENCIES_MS = (0, 50, 100, 200)
SIZES = (5, 20)
MINERS = 3


class _TipLog(threading.Thread):
    """Records ``(host time, height)`` of every tip change of one node (long-poll)."""

    def __init__(self, node, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.node, self.stop, self.changes = node, stop, []

    def run(self) -> None:
        with self.node.client(timeout=10) as client:
            tip = client.getinfo()["best_hash"]
            while not self.stop.is_set():
                try:
                    reply = client.waitfornewblock(1000, tip)
                except (RpcConnectionError, RpcError, OSError):
                    if self.stop.is_set():
                        return
                    time.sleep(0.1)
                    continue
                if reply["hash"] != tip:
                    self.changes.append((time.monotonic(), reply["height"]))
                    tip = reply["hash"]

    def reached(self, height: int, after: float) -> float | None:
        """Host time the tip first reached ``height`` at or after ``after``."""
        for at, tip_height in self.changes:
            if at >= after - 0.05 and tip_height >= height:
                return at
        return None


class _Miner(threading.Thread):
    """Mines one block at a time on ``node`` after exponential waits of mean ``mean`` s."""

    def __init__(self, node, mean: float, count: int, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.node, self.mean, self.count, self.stop = node, mean, count, stop
        self.rng = random.Random(seed)
        self.mined: list[tuple[str, float]] = []  # (block hash, host time of the reply)

    def run(self) -> None:
        address = encode_address(dev_address("miner"))
        with self.node.client(timeout=30) as client:
            while len(self.mined) < self.count and not self.stop.wait(self.rng.expovariate(1 / self.mean)):
                try:
                    hashes = client.generate(1, address)
                except (RpcConnectionError, RpcError, OSError):
                    continue
                if hashes:
                    self.mined.append((hashes[0], time.monotonic()))


def measure(n: int, latency_ms: float, blocks: int, interval: float, mode: str,
            say=print) -> dict:
    """One run: ``{"p50", "p90"}`` seconds, ``"stale"`` fraction, ``"blocks"``, ``"shaping"``."""
    with tempfile.TemporaryDirectory(prefix="bench-prop-") as tmp:
        devnet = Devnet(Path(tmp) / "devnet", chain="regtest")
        stop = threading.Event()
        try:
            nodes = devnet.up(n, miners=0, workers=0, log=lambda _line: None,
                              netns=netns.Shaping(latency=latency_ms, mode=mode))
            shaping = devnet.layout().shaping
            want = min(3, n - 1)

            def meshed() -> bool:
                for node in nodes:
                    with node.client(timeout=10) as client:
                        if client.getinfo()["peers"] < want:
                            return False
                return True
            try:
                wait_until(meshed, 10, f"every node to have {want} peers", 0.5)
            except DevnetError:
                pass  # measure the network as it is
            watchers = [_TipLog(node, stop) for node in nodes]
            for watcher in watchers:
                watcher.start()
            time.sleep(0.5)
            spread = sorted({0, n // 2, n - 1})[:MINERS]
            per_miner = -(-blocks // len(spread))
            miners = [_Miner(nodes[i], interval * len(spread), per_miner, stop, seed=i)
                      for i in spread]
            for miner in miners:
                miner.start()
            for miner in miners:
                miner.join(per_miner * interval * len(spread) * 4 + 60)
            mined = sorted((at, h) for miner in miners for h, at in miner.mined)
            time.sleep(max(3.0, 10 * latency_ms / 1000))  # let the last blocks spread
            with nodes[0].client() as client:
                final_height = client.getinfo()["height"]
                main = {client.getblockhash(h) for h in range(1, final_height + 1)}
                heights = {h: client.getblock(h)["height"] for h in
                           [b for _, b in mined if b in main]}
            times = []
            for at, block_hash in mined:
                if block_hash not in main:
                    continue
                arrivals = [w.reached(heights[block_hash], at) for w in watchers]
                if all(a is not None for a in arrivals):
                    times.append(max(max(arrivals) - at, 0.0))
            stale = sum(1 for _, b in mined if b not in main)
        finally:
            stop.set()
            devnet.down(log=lambda _line: None)
    if not times:
        raise RuntimeError(f"no block reached all {n} nodes at {latency_ms} ms")
    return {"p50": statistics.median(times), "p90": _quantile(times, 0.9),
            "stale": stale / max(1, len(mined)), "blocks": len(mined), "shaping": shaping,
            "measured": len(times)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_all(blocks: int = 20, interval: float = 2.0, sizes=SIZES, latencies=LATENCIES_MS) -> None:
    """Print the propagation table for every size, or why it is skipped."""
    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"propagation: skipped ({reason})")
        return
    # One shaper for every run: netem if the kernel has it, else the user-space relay
    # (also at 0 ms, so the reference carries the relay's own cost).
    mode = "netem" if netem_available() else "relay"
    print(f"propagation: links shaped by {'tc netem' if mode == 'netem' else 'the user-space relay'}")
    for n in sizes:
        print(f"propagation, {n} nodes, {blocks} blocks ~{interval:g} s apart from "
              f"{min(MINERS, n)} racing miners:")
        reference = None
        for latency in latencies:
            try:
                result = measure(n, latency, blocks, interval, mode)
            except (DevnetError, RuntimeError) as exc:
                print(f"  latency {latency:>3g} ms: failed ({exc})")
                continue
            if reference is None and latency == 0:
                reference = result
            ratio = ""
            if reference is not None and reference is not result and reference["p50"] > 0:
                ratio = (f"  ratio p50 {result['p50'] / reference['p50']:.1f}×, "
                         f"p90 {result['p90'] / max(reference['p90'], 1e-9):.1f}×")
            print(f"  latency {latency:>3g} ms ({result['shaping']}): propagation to all nodes "
                  f"p50 {result['p50'] * 1000:.0f} ms, p90 {result['p90'] * 1000:.0f} ms "
                  f"({result['measured']} blocks), stale {result['stale'] * 100:.1f} % of "
                  f"{result['blocks']}{'  [reference]' if result is reference else ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20, help="blocks per run")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="mean seconds between blocks (all miners together)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES_MS))
    args = parser.parse_args()
    run_all(args.blocks, args.interval, args.sizes, args.latencies)


if __name__ == "__main__":
    main()
