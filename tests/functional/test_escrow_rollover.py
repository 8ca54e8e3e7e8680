"""Escrow roll-over (issue 8 point 7): ``ticket issue --follow`` keeps paying a real
``merchant serve`` in every round across an escrow boundary, on a real regtest node.

The first escrow issues in rounds ``S … S+5``; the follower, started in round ``S``, sends
the next ESCROW_CREATE at tip ``last_round − confirm_depth − 2`` (lead 1), so the next
escrow starts no later than the round after the first one's last. The test mines one
block per round, after the round's batch is in, and checks that every round from ``S``
to the end has a batch accepted by the merchant, each naming the escrow it came from.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

import pytest

from tests.functional.framework import test_seed
from wallet.merchant.ticketstore import STATUSES
from tests.functional.test_wallet_flow import (Wallet, processes,  # noqa: F401
                                               run_while_mining, start_merchant)

pytestmark = pytest.mark.timeout(120)

TKT_RATE, ROUNDS, DRAW_LEN, PER_ROUND = 4, 6, 2, 3
EXTRA_ROUNDS = 3  # rounds followed in the second escrow


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """Each stdout line of ``proc`` (decoded JSON) on a queue, read by a daemon thread."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            if line.strip():
                lines.put(json.loads(line))
        lines.put({"event": "exit", "stderr": proc.stderr.read()})
    threading.Thread(target=read, daemon=True).start()
    return lines


def _next_event(lines: queue.Queue, want: str, timeout: float = 20.0) -> tuple[dict, list]:
    """The next event of kind ``want`` and the events before it (bounded wait)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        assert event["event"] != "exit", f"follower exited before {want}: {seen} {event}"
        if event["event"] == want:
            return event, seen
        seen.append(event)
    raise AssertionError(f"no {want} event within {timeout} s; saw {seen}")


def test_follow_rolls_over_to_the_next_escrow(nodes_factory, tmp_path, processes):  # noqa: F811
    began = time.monotonic()
    node = nodes_factory.start_node()
    cust = Wallet(tmp_path / "customer", node.datadir)
    shop = Wallet(tmp_path / "shop", node.datadir)
    cust.run("key", "import", "cust", "--seed-hex", test_seed(0).hex(), "--empty-passphrase")
    addr = shop.run("key", "new", "ma", "--empty-passphrase").stdout.strip()
    e = run_while_mining(node, cust, processes, "escrow", "create", "cust", "--merchant", addr,
                         "--beta", 1000, "--p", "1/2", "--tkt-rate", TKT_RATE,
                         "--rounds", ROUNDS, "--draw-len", DRAW_LEN)
    eid1, start, last1 = e["escrow_id"], e["start"], e["last_round"]
    url = start_merchant(shop, "ma", processes)
    node.generate(start - 1 - node.getinfo()["height"])
    until = last1 + EXTRA_ROUNDS
    proc = cust.popen("ticket", "issue", "cust", eid1, "--merchant", addr, "--count", PER_ROUND,
                      "--to", url, "--follow", "--until-round", until, "--json",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes.append(proc)
    lines = _lines(proc)

    batches, others = [], []
    for r in range(start, until + 1):
        batch, before = _next_event(lines, "batch")
        others += before
        assert batch["round"] == r == node.getinfo()["height"] + 1, (batch, others)
        batches.append(batch)
        node.generate(1)  # the next round starts only once this one is paid
    done, before = _next_event(lines, "done")
    others += before
    assert proc.wait(timeout=30) == 0, proc.stderr.read()

    kinds = [o["event"] for o in others]
    assert kinds == ["escrow-sent", "escrow-confirmed"], others
    sent, confirmed = others
    assert sent["height"] == last1 - 2 - 1 - 1  # confirm_depth 2, lead 1
    eid2 = confirmed["escrow_id"]
    assert confirmed["start"] <= last1 + 1 and eid2 != eid1
    # every round paid, none paused; each batch names its escrow
    assert [b["round"] for b in batches] == list(range(start, until + 1))
    assert all(b["count"] == b["accepted"] == PER_ROUND and b["rejected"] == 0 for b in batches)
    assert [b["escrow_id"] for b in batches] == (
        [eid1] * (last1 - start + 1) + [eid2] * EXTRA_ROUNDS)
    assert done["gaps"] == [] and [x["escrow_id"] for x in done["escrows"]] == [eid1, eid2]
    assert done["tickets"] == done["accepted"] == PER_ROUND * len(batches)
    # the merchant holds the tickets of both escrows; the wallet knows the new escrow
    status = shop.json("merchant", "status", "ma")["escrows"]
    held = {eid: sum(status[eid][k] for k in STATUSES) for eid in (eid1, eid2)}
    assert held == {eid1: PER_ROUND * (last1 - start + 1), eid2: PER_ROUND * EXTRA_ROUNDS}
    listed = {x["escrow_id"] for x in cust.json("escrow", "list")["escrows"]}
    assert {eid1, eid2} <= listed
    assert time.monotonic() - began < 60
