"""Crash consistency in the manner of Bitcoin Core's ``feature_dbcrash.py``.

A ``victim`` node is SIGKILLed at random moments while it mines, while it syncs from a
never-killed ``ref`` node, and while it reorganises onto ``ref``'s heavier fork. After
each kill it must restart (the start-up consistency check passes), converge with
``ref`` and then report exactly ``ref``'s ``getstatehash`` at the same tip.

``DBCRASH_ITERATIONS`` (default 3) sets the number of kills; ``make stress`` runs 100.
``DBCRASH_SEED`` fixes the random schedule (default: a new one, printed on failure).
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from tests.functional.framework import connect_nodes, test_address, wait_until
from wallet.rpcclient import RpcClient, RpcConnectionError, RpcError

ITERATIONS = int(os.environ.get("DBCRASH_ITERATIONS", "3"))
SEED = int(os.environ.get("DBCRASH_SEED", str(random.SystemRandom().randrange(2**32))))

pytestmark = pytest.mark.timeout(120 + 40 * ITERATIONS)


def _generate_in_thread(node, count: int, address: str) -> threading.Thread:
    """Start ``generate count`` on ``node`` in a thread; errors from the kill are expected."""

    def run() -> None:
        try:
            node.rpc.call("generate", count, address)
        except (RpcConnectionError, RpcError, OSError):
            pass  # the node died under the call

    thread = threading.Thread(target=run, name="dbcrash-generate", daemon=True)
    thread.start()
    return thread


def _wait_for_work(poller: RpcClient, under_way) -> None:
    """Poll (bounded) until ``under_way(getinfo)`` holds: the moment to crash the node."""

    def check() -> bool:
        try:
            return under_way(poller.call("getinfo"))
        except RpcConnectionError:
            return False  # busy: try again

    try:
        wait_until(check, 30, interval=0.01, description="victim busy")
    except Exception:  # noqa: BLE001 - the work may finish between polls: crash anyway
        pass


def _converge(victim, ref, rng: random.Random) -> str:
    """Wait until both report the same tip; break equal-work ties with a ``ref`` block."""
    for _ in range(6):
        try:
            return wait_until(
                lambda: (victim.getinfo()["best_hash"] == ref.getinfo()["best_hash"]
                         and victim.getinfo()["best_hash"]),
                15, description="victim and ref on one tip")
        except Exception:  # noqa: BLE001 - a tie or a slow sync: extend ref's chain, retry
            ref.rpc.call("generate", 1, test_address(8))
    raise AssertionError(f"victim {victim.getinfo()} and ref {ref.getinfo()} never converged "
                         f"(DBCRASH_SEED={SEED})")


def test_dbcrash_random_sigkills_keep_state_equal_to_a_never_killed_node(nodes_factory):
    rng = random.Random(SEED)
    ref, victim = nodes_factory.start_nodes(2, connect="none")
    ref.generate(5, test_address(8))
    connect_nodes(victim, ref)
    _converge(victim, ref, rng)
    kills = {"mine": 0, "sync": 0, "reorg": 0}
    interrupted = 0
    started = time.monotonic()
    for iteration in range(ITERATIONS):
        # Split the two: restart the victim without peers (a clean stop, not a kill).
        victim.stop()
        victim.start(connect=[])
        phase = rng.choice(["mine", "sync", "reorg"])
        victim_blocks = rng.randint(5, 40)
        ref_blocks = rng.randint(5, 30) if phase != "reorg" else victim_blocks + rng.randint(2, 10)
        base = victim.getinfo()["height"]
        poller = RpcClient.from_datadir(victim.datadir, timeout=2)
        try:
            if phase == "mine":  # kill while generate connects blocks one batch after another
                thread = _generate_in_thread(victim, victim_blocks, test_address(9))
                first = base + rng.randrange(3)  # crash once 1-3 blocks are connected
                _wait_for_work(poller, lambda info: info["height"] > first)
                victim.kill()
                thread.join(timeout=30)
                ref.rpc.call("generate", ref_blocks, test_address(8))
            else:  # kill while syncing ref's extra blocks, or reorganising onto its fork
                victim.rpc.call("generate", victim_blocks if phase == "reorg" else 1,
                                test_address(9))
                before = victim.getinfo()["best_hash"]
                ref.rpc.call("generate", ref_blocks, test_address(8))
                assert victim.rpc.call("addnode", ref.p2p_address) is True
                _wait_for_work(poller, lambda info: info["best_hash"] != before)
                victim.kill()
        finally:
            poller.close()
        kills[phase] += 1
        assert victim.returncode == -9
        victim.start(connect=[])  # must pass the start-up store check
        if victim.getinfo()["best_hash"] != ref.getinfo()["best_hash"] and (
                phase != "mine" or victim.getinfo()["height"] < base + victim_blocks):
            interrupted += 1  # the kill hit the victim with work still to do
        assert victim.rpc.call("addnode", ref.p2p_address) is True
        tip = _converge(victim, ref, rng)
        state = victim.rpc.call("getstatehash")
        assert state == ref.rpc.call("getstatehash"), (
            f"iteration {iteration} ({phase}): state differs at tip {tip} "
            f"(DBCRASH_SEED={SEED})")
    elapsed = time.monotonic() - started
    print(f"dbcrash: {ITERATIONS} SIGKILLs ({kills}), {interrupted} with work in progress, "
          f"0 divergences, height "
          f"{ref.getinfo()['height']}, {elapsed:.1f} s, seed {SEED}")
