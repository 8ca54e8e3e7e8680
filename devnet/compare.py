"""`microcash-devnet compare`: MicroCash, MICROPAY and payment channels on one devnet (SPEC §17).

1. A fresh regtest devnet (node0 produces blocks on demand with ``generate``; the other
   nodes follow over p2p); genesis funds one payer per run.
2. Setup block: every run's escrows / MP escrows / channels. Payments run in rounds
   ``start … end`` (``start`` = the MicroCash escrow's first issuing round), the same
   workload through each honest run, while a cheating payer per scheme runs beside them.
3. After every block the chain counter reads the block back (``getblock h 0``),
   classifies its transactions by kind and run, reads every lock's state and checks
   money conservation. The loop ends when every run is settled (refunds, closes).
4. Checks: conservation, every winner paid or expired, refunds returned (each run's
   money is back with its payer and merchants), all nodes on one state hash.

``run_compare`` returns (ok, report); the CLI prints the table and exits 1 if not ok.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Callable

from consensus.genesis import genesis_document
from consensus.params import COIN, get_params
from devnet.compare_chain import ChainCounter
from devnet.compare_runs import ChannelRun, Context, MicroCashRun, MicropayRun, Run
from devnet.compare_workload import Workload
from devnet.keys import dev_address, dev_premine
from devnet.launcher import Devnet, wait_until

CHAIN = "regtest"      # trivial PoW, no retarget: blocks on demand at any pace
SCHEMES = ("microcash", "micropay", "spilman", "penalised")
TITLES = {"microcash": "MicroCash", "micropay": "MICROPAY", "spilman": "Spilman channel",
          "penalised": "penalised channel"}


def build_runs(w: Workload) -> tuple[dict[str, Run], dict[str, list[Run]]]:
    """The honest run of every scheme and its cheating runs."""
    honest = {"microcash": MicroCashRun("microcash", w),
              "micropay": MicropayRun("micropay", w),
              "spilman": ChannelRun("spilman", w, penalised=False),
              "penalised": ChannelRun("penalised", w, penalised=True)}
    cheats = {"microcash": [MicroCashRun("microcash-cheat", w, cheat=True)],
              "micropay": [MicropayRun("micropay-cheat", w, cheat=True)],
              "spilman": [ChannelRun("spilman-cheat", w, penalised=False, cheat=True)],
              "penalised": [ChannelRun("penalised-cheat", w, penalised=True, cheat=True)]}
    if w.points_of_sale > 1:
        cheats["penalised"].append(ChannelRun("penalised-cheat-identical", w, penalised=True,
                                              cheat=True, identical=True))
    else:
        del cheats["penalised"]
    return honest, cheats


def run_compare(root: Path, w: Workload, nodes: int = 2, seed: int = 1,
                say: Callable[[str], None] = print) -> tuple[bool, dict]:
    """Run the whole comparison in a fresh devnet at ``root``; (ok, report)."""
    if root.exists():
        Devnet(root).down(log=say)
        shutil.rmtree(root)
    honest, cheats = build_runs(w)
    runs = list(honest.values()) + [r for rs in cheats.values() for r in rs]
    devnet = Devnet(root, chain=CHAIN)
    root.mkdir(parents=True)
    premine = dev_premine() + [p for run in runs for p in run.premine()]
    devnet.genesis_path.write_text(json.dumps(genesis_document(CHAIN, int(time.time()), premine)))
    say(f"compare: starting a {nodes}-node {CHAIN} devnet in {root}")
    node_infos = devnet.up(nodes, miners=0, log=say)
    began = time.monotonic()
    try:
        return _run(node_infos, honest, cheats, runs, w, seed, say, began)
    finally:
        devnet.down(log=say)


class _Chain:
    """Block production and reading: generate on node0, count, feed the runs."""

    def __init__(self, ctx: Context, counter: ChainCounter, runs: list[Run]) -> None:
        self.ctx, self.counter, self.runs = ctx, counter, runs
        self.miner = dev_address("miner").hex()
        self.conservation: list[tuple[bool, str]] = []

    def mine(self) -> int:
        self.ctx.rpc.generate(1, self.miner)
        h = self.ctx.rpc.getinfo()["height"]
        block = self.counter.read_block(h)
        for run in self.runs:
            run.after_block(self.ctx, h, block)
        ok, text = self.counter.check_conservation()
        if not ok or not self.conservation:
            self.conservation.append((ok, text))
        self.last = (ok, text)
        return h


def _run(node_infos, honest, cheats, runs, w: Workload, seed: int, say, began) -> tuple[bool, dict]:
    params = get_params(CHAIN)
    rpc = node_infos[0].client()
    info = rpc.getinfo()
    owners = {}
    for run in runs:
        owners.update(run.owners())
    counter = ChainCounter(rpc, owners)
    counter.addresses.update(addr for addr, _ in dev_premine())
    setup_height = info["height"] + 1
    start = setup_height + params.confirm_depth + 1
    ctx = Context(rpc, params, bytes.fromhex(info["genesis_hash"]), w, start,
                  start + w.blocks - 1, random.Random(seed))
    chain = _Chain(ctx, counter, runs)
    say(f"compare: setup block {setup_height}: escrows, MP escrows and channels of "
        f"{len(runs)} runs; payments in rounds {start}–{ctx.end}")
    for run in runs:
        run.setup(ctx)
    t = chain.mine()
    limit = ctx.end + 3 * params.d_redeem + params.d_draw + 20
    while t < limit:
        for run in runs:
            run.on_tip(ctx, t)
        t = chain.mine()
        if ctx.start <= t <= ctx.end and (t - ctx.start) % 10 == 0:
            say(f"compare: round {t} of {ctx.start}–{ctx.end} "
                f"({time.monotonic() - began:.0f} s)")
        if t > ctx.end and all(run.finished(ctx, t) for run in runs) and not counter.live_objects():
            break
    say(f"compare: settled at height {t} ({time.monotonic() - began:.0f} s); checking")
    report = _report(ctx, counter, chain, honest, cheats, node_infos, t)
    report["seconds"] = round(time.monotonic() - began, 1)
    return report["ok"], report


def _cpu_us(seconds: float, payments: int) -> float:
    return round(seconds / payments * 1e6, 1) if payments else 0.0


def _record(run: Run, counter: ChainCounter, ctx: Context) -> dict:
    counts = counter.runs[run.label]
    settle = run.settle(ctx)
    rec = {"scheme": run.scheme, "run": run.label, "payments": run.accepted,
           "escrows_created": counts.created.get("escrow", 0) + counts.created.get("mp_escrow", 0),
           "channels_created": counts.created.get("channel", 0),
           "txs": counts.total_txs, "bytes": counts.total_bytes,
           "txs_by_kind": dict(counts.txs), "bytes_by_kind": dict(counts.bytes),
           "coin_blocks": counts.coin_blocks, "mcash_blocks": round(counts.coin_blocks / COIN, 3),
           "customer_cpu_us_per_payment": _cpu_us(run.customer_cpu, run.accepted),
           "merchant_cpu_us_per_payment": _cpu_us(run.merchant_cpu, run.accepted),
           "refused": dict(run.refused), **run.winners(counts), **settle}
    if run.cheat:
        rec.update(cheat=run.cheat_kind, first_cheat_round=run.first_cheat_round,
                   caught_round=run.caught_round, caught_how=run.caught_how or "not caught",
                   blocks_to_caught=(None if run.caught_round is None
                                     else run.caught_round - run.first_cheat_round),
                   burned=ctx.rpc.getinfo()["burned"] if run.scheme == "microcash" else 0)
    return rec


def _report(ctx, counter, chain, honest, cheats, node_infos, t) -> dict:
    facts: list[tuple[bool, str]] = []
    facts.extend(chain.conservation[:1])
    facts.append(chain.last)
    live = counter.live_objects()
    facts.append((not live, f"no escrow, MP escrow or channel left open ({len(live)} live)"))
    facts.append((not counter.unowned, f"every transaction belongs to a run "
                                       f"({len(counter.unowned)} unowned)"))
    records, cheat_records = [], []
    for name in SCHEMES:
        run = honest[name]
        rec = _record(run, counter, ctx)
        rec["cheats"] = [_record(c, counter, ctx) for c in cheats.get(name, [])]
        records.append(rec)
        cheat_records.extend(rec["cheats"])
        for problem in run.problems:
            facts.append((False, f"{run.label}: {problem}"))
        facts.append((rec["payments"] == ctx.workload.total_payments,
                      f"{run.label}: {rec['payments']} of {ctx.workload.total_payments} "
                      f"payments accepted"))
        facts.extend(_money_facts(run, rec))
    burned = ctx.rpc.getinfo()["burned"]
    for rec in cheat_records:
        burn = rec["burned"]
        back = rec["merchants_received"] + burn
        facts.append((rec["payer_cost"] == back,
                      f"{rec['run']}: payer's cost {rec['payer_cost']} = merchants' "
                      f"{rec['merchants_received']} + burned {burn}"))
    facts.append((burned == sum(r["burned"] for r in cheat_records),
                  f"burned {burned} units, all by the MicroCash cheater's penalty"))
    if len(node_infos) > 1:
        facts.append(_same_state(node_infos, t))
    return {"ok": all(ok for ok, _ in facts), "chain": CHAIN, "height": t,
            "payment_rounds": [ctx.start, ctx.end], "workload": ctx.workload.to_json(),
            "schemes": records, "facts": [{"ok": ok, "text": text} for ok, text in facts],
            "block_bytes": counter.block_bytes, "coinbase_bytes": counter.coinbase_bytes}


def _money_facts(run: Run, rec: dict) -> list[tuple[bool, str]]:
    """Every winner paid or expired, and the refunds returned, for an honest run."""
    facts = []
    if run.scheme in ("microcash", "micropay"):
        held, paid, expired = rec["winners_held"], rec["winners_paid"], rec["winners_expired"]
        facts.append((held == paid + expired and expired == 0,
                      f"{run.label}: {held} winning tickets held, {paid} paid, {expired} expired"))
        facts.append((rec["merchants_received"] == paid * rec["beta"],
                      f"{run.label}: merchants received {rec['merchants_received']} "
                      f"= {paid} × β {rec['beta']}"))
    else:
        facts.append((rec["channels_expired"] == 0,
                      f"{run.label}: {rec['channels_closed']} channels closed, "
                      f"{rec['channels_expired']} expired"))
        expected = run.accepted * run.w.value
        facts.append((rec["merchants_received"] == expected,
                      f"{run.label}: merchants received {rec['merchants_received']} "
                      f"= {run.accepted} payments × {run.w.value}"))
    facts.append((rec["payer_cost"] == rec["merchants_received"],
                  f"{run.label}: refunds returned — payer's cost {rec['payer_cost']} "
                  f"= what its merchants received"))
    return facts


def _same_state(node_infos, t: int) -> tuple[bool, str]:
    hashes = []
    for node in node_infos:
        client = node.client()
        wait_until(lambda c=client: c.getinfo()["height"] >= t, 60, f"node{node.index} to sync")
        hashes.append(client.getstatehash()["state_hash"])
    return len(set(hashes)) == 1, f"all {len(hashes)} nodes on state hash {hashes[0][:16]}…"


# ---- printing ------------------------------------------------------------------------------

def format_table(report: dict) -> list[str]:
    """The comparison table and the cheat table, as lines."""
    w = report["workload"]
    lines = [f"workload: {w['merchants']} merchants, {w['payments_per_block']} payments per "
             f"block, expected value {w['value']} units, {w['blocks']} blocks "
             f"({w['payments']} payments); p = 2^-{w['win_bits']}, β = {w['beta']}; "
             f"{w['points_of_sale']} points of sale per merchant (penalised)", ""]
    head = (f"{'scheme':<18}{'payments':>9}{'escrows':>8}{'chans':>6}{'txs':>6}"
            f"{'bytes':>9}{'B/pay':>7}{'MCASH·blk':>11}{'cust µs':>9}{'merch µs':>9}")
    lines += [head, "-" * len(head)]
    for rec in report["schemes"]:
        per = rec["bytes"] / rec["payments"] if rec["payments"] else 0
        lines.append(f"{TITLES[rec['scheme']]:<18}{rec['payments']:>9}{rec['escrows_created']:>8}"
                     f"{rec['channels_created']:>6}{rec['txs']:>6}{rec['bytes']:>9}{per:>7.1f}"
                     f"{rec['mcash_blocks']:>11.2f}{rec['customer_cpu_us_per_payment']:>9.1f}"
                     f"{rec['merchant_cpu_us_per_payment']:>9.1f}")
    mc = report["schemes"][0]
    lines.append("")
    for rec in report["schemes"][1:]:
        if rec["bytes"] and rec["txs"]:
            lines.append(f"MicroCash / {TITLES[rec['scheme']]}: bytes {mc['bytes'] / rec['bytes']:.2f}, "
                         f"txs {mc['txs'] / rec['txs']:.2f}, coins×blocks "
                         f"{mc['coin_blocks'] / max(rec['coin_blocks'], 1):.2f}")
    lines += ["", "cheating payer (gain = value of payments accepted − coins the payer lost):"]
    for rec in report["schemes"]:
        for c in rec["cheats"]:
            caught = (f"caught in block {c['caught_round']}, {c['blocks_to_caught']} "
                      f"block(s) after the first cheat ({c['caught_how']})"
                      if c["caught_round"] else c["caught_how"])
            extra = f", penalty burned {c['burned']}" if c["burned"] else ""
            lines.append(f"  {TITLES[c['scheme']]:<18} {c['cheat']}: {c['payments']} payments "
                         f"accepted (value {c['service_value']}), lost {c['payer_cost']}"
                         f"{extra}; gain {c['gain']:+d} units; {caught}")
    lines.append("")
    for fact in report["facts"]:
        lines.append(f"  [{'ok' if fact['ok'] else 'FAILED'}] {fact['text']}")
    return lines
