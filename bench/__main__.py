"""Run every benchmark: ``python -m bench [--seconds S]``."""

import argparse

from bench import chain, rpc
from bench.tickets import run_all


def main() -> None:
    parser = argparse.ArgumentParser(description="MicroCash micro-benchmarks (SPEC §14)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="time budget per measurement (default 1 s)")
    parser.add_argument("--blocks", type=int, default=20_000,
                        help="length of the empty chain for the connect-rate figures")
    args = parser.parse_args()
    run_all(args.seconds)
    chain.run_all(args.blocks)
    rpc.run_all()


main()
