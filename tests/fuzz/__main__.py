"""``python -m tests.fuzz``: run every fuzz target at length (``make fuzz``).

Spreads ``--inputs`` (default 10^6) evenly over the discovered targets, prints the
count per target and the total, and exits 1 on any undeclared exception (the input is
saved under tests/fuzz/crashes/). Engine: atheris (coverage-guided, one process per
target) when installed, else our deterministic mutation fuzzer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.runner import CRASH_DIR, discover, fuzz_target

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_atheris(name: str, module, count: int, seed: int) -> tuple[int, bool, str]:
    """One atheris process for ``name``; ``(runs, crashed, output tail)``."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as corpus:
        for i, data in enumerate(module.SEEDS):
            Path(corpus, f"seed-{i}").write_bytes(data)
        CRASH_DIR.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "tests.fuzz.atheris_child", name, f"-runs={count}",
                f"-seed={seed}", "-timeout=20", "-rss_limit_mb=3072",
                f"-artifact_prefix={CRASH_DIR}/{name}-", "-print_final_stats=1", corpus]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    match = re.search(r"Done (\d+) runs", output) or re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    runs = int(match.group(1)) if match else 0
    return runs, proc.returncode != 0, output[-4000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in total")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=["auto", "atheris", "mutation"], default="auto")
    args = parser.parse_args(argv)
    targets = discover(args.targets or None)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "mutation"
    per_target = -(-args.inputs // len(targets))
    print(f"fuzzing {len(targets)} targets x {per_target} inputs with {engine}", flush=True)
    total, failed = 0, []
    for name, module in targets.items():
        began = time.monotonic()
        if engine == "atheris":
            runs, crashed, tail = _run_atheris(name, module, per_target, args.seed)
            detail = tail if crashed else ""
        else:
            runs, findings = fuzz_target(name, module, per_target, args.seed)
            crashed = bool(findings)
            detail = f"{findings[0].error}saved: {findings[0].path}" if findings else ""
        total += runs
        status = "FAILED" if crashed else "ok"
        print(f"{name:24} {runs:>9} inputs {time.monotonic() - began:7.1f} s  {status}", flush=True)
        if crashed:
            failed.append(name)
            print(detail, flush=True)
    print(f"total {total} inputs, {len(failed)} failing targets{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
