"""Node core at chain scale (issue 5): in-process figures against same-run references.

- empty-block connect rate through ``ChainState.add_block`` at height ≈1 000 vs ≈20 000
  (goal: ratio ≥ 0.85), and the rate of connecting all of them from a local store;
- a block of 30 REDEEMs × 256 tickets: connect tickets/s vs raw libsodium verify on one
  core (goal ≥ 0.8) and with two worker processes (goal ≥ 1.5);
- connect → disconnect → connect of that block three times (goal: cycles within 15 %);
- a mempool of 10 000 transfers: select + connect + mempool update of one block vs
  verifying that block's signatures once (goal ≤ 1.3).
"""

import os
import statistics
import tempfile
import time
from pathlib import Path

from nacl.bindings import crypto_sign_open

from consensus import keys
from consensus.block import Block, Header, compute_tx_root, is_pow_valid, make_genesis
from consensus.escrow import compute_escrow_id, compute_t_draw
from consensus.params import REGTEST
from consensus.state import get_escrow
from consensus.ticket import sign_ticket
from consensus.tx import make_coinbase, make_escrow_create, make_redeem, make_transfer
from consensus.vdf import compute_vdf
from node.blockindex import HAVE_DATA, CandidateSet
from node.chainstate import ChainState
from node.mempool import Mempool
from node.store import ChainStore
from node.verify import WorkerPool

GENESIS_TIME = 1_700_000_000
MINER = bytes(32)


def _seed(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


def _params(n_funded: int):
    premine = tuple((keys.public_key(_seed(i)), 10**13) for i in range(n_funded))
    return REGTEST.with_genesis(GENESIS_TIME, premine)


def _block(params, parent: Header, txs=()) -> Block:
    """A valid regtest block on ``parent`` (coinbase + ``txs``, PoW ground)."""
    height = parent.height + 1
    fees = sum(t.fee for t in txs)
    all_txs = (make_coinbase(height, [(MINER, params.block_reward + fees)]),) + tuple(txs)
    vdf, cps = compute_vdf(parent.hash(), params.vdf_iterations, params.vdf_checkpoints)
    root = compute_tx_root([t.txid() for t in all_txs])
    nonce = 0
    while True:
        header = Header(1, height, parent.hash(), GENESIS_TIME + height, params.genesis_target,
                        nonce, root, vdf, tuple(cps))
        if is_pow_valid(header.hash(), header.target):
            return Block(header, all_txs)
        nonce += 1


def _raw_verify_rate(triples) -> float:
    start = time.perf_counter()
    for pk, msg, sig in triples:
        crypto_sign_open(sig + msg, pk)
    return len(triples) / (time.perf_counter() - start)


def _line(name: str, figure: float, unit: str, ref_name: str, ref: float, goal: str) -> None:
    print(f"{name:<44} {figure:>10,.1f} {unit:<9} {ref_name:<26} {ref:>10,.1f}   "
          f"ratio {figure / ref:5.2f}   goal {goal}")


def bench_empty_blocks(n_blocks: int) -> None:
    params = _params(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(Path(tmp) / "a")
        chain = ChainState(params, store)
        tip, raws = chain.genesis.header, []
        for _ in range(n_blocks):
            block = _block(params, tip)
            raws.append(block.encode())
            tip = block.header
        store.close()
        store = ChainStore(Path(tmp) / "b")
        chain = ChainState(params, store)
        stamps = [time.perf_counter()]
        for raw in raws:
            chain.add_block(raw)
            stamps.append(time.perf_counter())
        store.close()
    window = min(200, n_blocks // 10)

    def rate_at(h: int) -> float:
        lo, hi = max(0, h - window // 2), min(n_blocks, h + window // 2)
        return (hi - lo) / (stamps[hi] - stamps[lo])

    low, high = rate_at(min(1000, n_blocks // 2)), rate_at(n_blocks - window // 2)
    total = n_blocks / (stamps[-1] - stamps[0])
    _line(f"empty-block connect at height ≈{n_blocks}", high, "blocks/s",
          "same at height ≈1000", low, "≥ 0.85")
    print(f"  in-process connect of {n_blocks} empty regtest blocks from a local store: "
          f"{total:,.0f} blocks/s")


def _redeem_chain(params, n_redeems: int, tickets_each: int):
    """Raw blocks: escrow creations, blocks up to the draw, the REDEEM block."""
    owner_seed, merchant_seed = _seed(0), _seed(1)
    merchant = keys.public_key(merchant_seed)
    genesis_block = make_genesis(params)
    gh = genesis_block.hash()
    creates = [make_escrow_create(owner_seed, gh, i, 0, tickets_each * 4, 10**9, 1, 1, 1,
                                  tickets_each, 1, [merchant]) for i in range(n_redeems)]
    blocks = [_block(params, genesis_block.header, creates)]
    ids = [compute_escrow_id(blocks[0].hash(), tx.txid()) for tx in creates]
    return blocks, ids, owner_seed, merchant_seed, gh


def _take_off(chain: ChainState, block: Block) -> None:
    """Disconnect the tip ``block`` and forget its data, so it can be submitted again."""
    chain._disconnect_tip()
    entry = chain.index.get(block.hash())
    entry.status &= ~HAVE_DATA
    entry.chain_has_data = False
    chain.index.candidates = CandidateSet()
    for e in chain.index.main:
        chain.index.candidates.add(e)


def bench_redeem_block(n_redeems: int = 30, tickets_each: int = 256, cycles: int = 3,
                       runs: int = 5) -> None:
    """Connect the REDEEM block ``runs`` times per set-up (inline, then 2 worker
    processes), each run right after its own raw-verify reference; prints the medians of
    figure, reference and the per-run ratio."""
    params = _params(2)
    blocks, ids, owner_seed, merchant_seed, gh = _redeem_chain(params, n_redeems, tickets_each)
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(Path(tmp) / "c")
        chain = ChainState(params, store)
        chain.add_block(blocks[0].encode())
        # mine until group 0 is drawn and redeemable
        escrow = get_escrow(store.state, ids[0])
        target = compute_t_draw(params, escrow, 0) + 1
        tip = blocks[0].header
        while chain.height < target - 1:
            block = _block(params, tip)
            chain.add_block(block.encode())
            tip = block.header
        tickets = [[sign_ticket(owner_seed, gh, eid, 0, s) for s in range(tickets_each)]
                   for eid in ids]
        redeems = [make_redeem(merchant_seed, gh, 0, t) for t in tickets]
        block = _block(params, tip, redeems)
        raw = block.encode()
        owner = keys.public_key(owner_seed)
        triples = [(owner, t.signing_message(gh), t.sig) for ts in tickets for t in ts]
        n = len(triples)
        results = {}
        for workers in (0, 2):
            pool = WorkerPool(params, gh, workers)
            chain.prepare = lambda b, pool=pool: pool.prepare(b, store.state, frozenset())
            if workers:
                warm = pool.prepare(block, store.state, frozenset())  # start the processes
                assert all(t in warm for t in triples)
            figures, references, cpu_ratios, ceilings, main_cpu = [], [], [], [], []
            for _ in range(runs):
                cpu = time.process_time()
                references.append(_raw_verify_rate(triples))
                cpu_ref = time.process_time() - cpu
                start, cpu = time.perf_counter(), time.process_time()
                result, _ = chain.add_block(raw)
                figures.append(n / (time.perf_counter() - start))
                main_cpu.append(time.process_time() - cpu)
                cpu_ratios.append(cpu_ref / main_cpu[-1])
                assert result.status.value == "connected", result
                _take_off(chain, block)
                if workers:  # the signatures alone across the same worker processes
                    start = time.perf_counter()
                    assert len(pool.verify_many(triples)) == n
                    ceilings.append(n / (time.perf_counter() - start) / references[-1])
            results[workers] = (figures, references)
            if workers:
                # The workers' signature time and this process's own CPU time share the
                # machine's cores; with perfect overlap a block takes at least the
                # signatures' wall time plus the main CPU time spread over the cores.
                ceiling, cpu_ms = statistics.median(ceilings), statistics.median(main_cpu)
                sig_wall = n / (ceiling * statistics.median(references))
                cores = os.cpu_count() or 1
                bound = n / (sig_wall + cpu_ms / cores) / statistics.median(references)
                print(f"  ({workers} workers: the block's signatures alone, no state work, "
                      f"across the same {workers} processes: ratio {ceiling:.2f} to 1-core "
                      f"raw verify; this process's own CPU per block {cpu_ms * 1e3:.0f} ms; "
                      f"with perfect overlap on {cores} cores at most {bound:.2f})")
            if workers == 0:
                print(f"  (1 core, CPU time of this process instead of wall time: ratio "
                      f"{statistics.median(cpu_ratios):.2f}, less moved by other jobs)")
            if workers == 0:
                chain.add_block(raw)
                times = []
                for _ in range(cycles):
                    start = time.perf_counter()
                    chain._disconnect_tip()
                    chain.activate_best_chain()
                    times.append(time.perf_counter() - start)
                print(f"  connect→disconnect→connect ×{cycles} of the {n}-ticket block: "
                      + ", ".join(f"{t:.2f} s" for t in times)
                      + f"  (max/min {max(times) / min(times):.2f}, goal ≤ 1.15)")
                _take_off(chain, block)
            pool.close()
        for workers, label, ref_label, goal in ((0, "1 core", "raw libsodium verify", "≥ 0.8"),
                                               (2, "2 workers", "raw libsodium verify 1 core",
                                                "≥ 1.5")):
            figures, references = results[workers]
            _median_line(f"REDEEM block {n_redeems}×{tickets_each} connect, {label}", figures,
                         references, "tickets/s", ref_label, goal)
        store.close()


def _median_line(name: str, figures: list[float], references: list[float], unit: str,
                 ref_name: str, goal: str) -> None:
    """Medians of figure and reference, and the median of the per-run ratios."""
    ratios = sorted(f / r for f, r in zip(figures, references))
    print(f"{name:<44} {statistics.median(figures):>10,.1f} {unit:<9} {ref_name:<26} "
          f"{statistics.median(references):>10,.1f}   ratio {statistics.median(ratios):5.2f}"
          f"   goal {goal}  (median of {len(ratios)}; ratios "
          + " ".join(f"{r:.2f}" for r in ratios) + ")")


def bench_mempool_block(n_txs: int = 10_000, senders: int = 100) -> None:
    params = _params(senders)
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(Path(tmp) / "d")
        chain = ChainState(params, store)
        gh = chain.genesis_hash
        pool = Mempool(params, gh)
        chain.prepare = lambda b: pool.verified
        vdf, cps = compute_vdf(gh, params.vdf_iterations, params.vdf_checkpoints)
        pool.reset(store.snapshot_state(), 0, vdf)
        for i in range(n_txs):
            s = i % senders
            pool.add(make_transfer(_seed(s), gh, i // senders, 1000 + i % 7, MINER, 1 + i))
        start = time.perf_counter()
        txs = pool.select(params.max_block_bytes - 20_000)
        block = _block(params, chain.genesis.header, txs)
        result, change = chain.add_block(block.encode())
        pool.reset(store.snapshot_state(), chain.height,
                   compute_vdf(block.hash(), params.vdf_iterations, params.vdf_checkpoints)[0],
                   confirmed={t.txid() for t in txs}, written=change.written_keys)
        elapsed = time.perf_counter() - start
        assert result.status.value == "connected", result
        triples = [(t.sender, t.signing_message(gh), t.sig) for t in txs]
        start = time.perf_counter()
        for pk, msg, sig in triples:
            keys.verify(pk, msg, sig)
        verify = time.perf_counter() - start
        print(f"{'mempool ' + str(n_txs) + ': one block of ' + str(len(txs)) + ' txs':<44} "
              f"{elapsed:>10.3f} s         verify its signatures once {verify:>8.3f} s   "
              f"ratio {elapsed / verify:5.2f}   goal ≤ 1.3  (pool left: {len(pool)})")
        store.close()


def run_all(blocks: int = 20_000) -> None:
    """Every figure of this module; ``blocks`` sets the long-chain length."""
    bench_empty_blocks(blocks)
    bench_redeem_block()
    bench_mempool_block()


if __name__ == "__main__":
    run_all()
