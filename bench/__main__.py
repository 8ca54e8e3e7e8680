"""Run every benchmark: ``python -m bench [--seconds S] [--sync-blocks N]
[--propagation-blocks N]``."""

import argparse
import gc

from bench import chain, economy, merchant, propagation, rpc, sync, tickets
from node.main import GC_YOUNG_THRESHOLD


def main() -> None:
    parser = argparse.ArgumentParser(description="MicroCash benchmarks (SPEC §14, issue 5)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="time budget per measurement (default 1 s)")
    parser.add_argument("--sync-blocks", type=int, default=20_000,
                        help="chain length of the two-process sync benchmark (0 = skip)")
    parser.add_argument("--blocks", type=int, default=20_000,
                        help="length of the empty chain for the connect-rate figures")
    parser.add_argument("--propagation-blocks", type=int, default=20,
                        help="blocks per run of the namespaced propagation benchmark "
                             "(0 = skip; skipped anyway when not root)")
    args = parser.parse_args()
    # The in-process figures run with the node process's garbage-collector settings
    # (node/main.py, DESIGN "Garbage collection"), so they measure what the node runs.
    gc.set_threshold(GC_YOUNG_THRESHOLD)
    gc.freeze()
    tickets.run_all(args.seconds)
    chain.run_all(args.blocks)
    rpc.run_all()
    merchant.run_all(args.seconds)
    economy.run_all()
    if args.sync_blocks:
        sync.run_all(args.sync_blocks)
    if args.propagation_blocks:
        propagation.run_all(args.propagation_blocks)


main()
