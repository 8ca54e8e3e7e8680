"""Run every benchmark: ``python -m bench [--seconds S]``."""

import argparse

from bench import merchant
from bench.tickets import run_all


def main() -> None:
    parser = argparse.ArgumentParser(description="MicroCash micro-benchmarks (SPEC §14)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="time budget per measurement (default 1 s)")
    args = parser.parse_args()
    run_all(args.seconds)
    merchant.run_all(args.seconds)


main()
