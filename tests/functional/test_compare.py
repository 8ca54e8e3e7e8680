"""`microcash-devnet compare` end to end on a small workload (SPEC §17, issue 7 point 3)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devnet.launcher import Devnet

SCHEMES = ["microcash", "micropay", "spilman", "penalised"]
COUNTS = ("payments", "escrows_created", "channels_created", "txs", "bytes", "coin_blocks",
          "customer_cpu_us_per_payment", "merchant_cpu_us_per_payment")


@pytest.mark.timeout(120)
def test_compare_small_workload_counts_every_scheme_from_the_chain(tmp_path: Path) -> None:
    root, out = tmp_path / "cmp", tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, "-m", "devnet.cli", "compare", "--merchants", "2",
         "--payments-per-block", "32", "--blocks", "3", "--dir", str(root), "--json", str(out)],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "result: all invariants hold" in proc.stdout and "[FAILED]" not in proc.stdout
    report = json.loads(out.read_text())
    records = report["schemes"]
    assert [r["scheme"] for r in records] == SCHEMES
    for rec in records:
        assert all(isinstance(rec[key], (int, float)) for key in COUNTS), rec
        assert rec["payments"] == 2 * 3 * 16 and rec["txs"] > 0 and rec["bytes"] > 0
        assert rec["coin_blocks"] > 0 and rec["gain"] == rec["service_value"] - rec["payer_cost"]
        assert rec["cheats"], f"{rec['scheme']} has no cheat run"
    mc, mp, spilman, penalised = records
    # One escrow for every merchant vs a fresh MP escrow per win; two txs per channel.
    assert mc["escrows_created"] == 1 and mc["txs_by_kind"]["ESCROW_CREATE"] == 1
    assert mp["escrows_created"] == mp["txs_by_kind"]["MP_ESCROW"] >= mp["winners_paid"]
    assert mp["txs_by_kind"].get("MP_CLAIM", 0) == mp["winners_paid"]
    for ch in (spilman, penalised):
        assert ch["channels_created"] == 2 and ch["txs"] == 4
    assert penalised["penalty"] > 0 == spilman["penalty"]
    # The cheats: MicroCash's penalty burned by CHEAT_PROOF, the penalised channel's
    # equivocation proven with CHANNEL_CHEAT, and both cost the cheater more than it got.
    mc_cheat = mc["cheats"][0]
    assert mc_cheat["burned"] > 0 and mc_cheat["txs_by_kind"].get("CHEAT_PROOF") == 1
    assert mc_cheat["gain"] < 0
    equivocation = penalised["cheats"][0]
    assert equivocation["txs_by_kind"].get("CHANNEL_CHEAT") == 1 and equivocation["gain"] < 0
    assert spilman["cheats"][0]["gain"] <= 0
    assert Devnet(root).running() == []
