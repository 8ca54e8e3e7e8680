"""On-chain economy per 10^6 payments to 100 merchants: MicroCash, MICROPAY, channels.

Extrapolates the workload of ``microcash-devnet compare`` (SPEC §17) from the encoded
sizes of real transactions built here with ``consensus.tx`` (signed, canonical bytes, as
a block carries them) and the workload model:

- one customer pays ``MERCHANTS`` merchants ``RATE`` payments per block in total, for
  ``PAYMENTS / RATE`` blocks, with win probability ``p = 2^-WIN_BITS`` in the lottery
  schemes;
- MicroCash: one ESCROW_CREATE naming every merchant; per draw group every merchant with
  a winner sends one REDEEM of its winners (what the wallet's redeemer does), so the
  expected REDEEM count is ``groups · m · (1 − (1 − 1/m)^k)``;
- MICROPAY: every winner is one MP_CLAIM and one fresh MP_ESCROW, plus the initial pool
  of ``m · (pool + 1)`` escrows (the pool rule of ``devnet.compare_runs``);
- channels: one CHANNEL_OPEN and one CHANNEL_CLOSE per merchant (Spilman and penalised
  alike; the penalty changes coins locked, not bytes).

Each line: figure, reference, ratio. References are the paper's figures (MicroCash
paper §6: a 110-byte ticket vs MICROPAY's 274; a 360-byte claim transaction vs 605;
"~50 %" less chain data; > 1000 escrows/s for MICROPAY at a customer's issue rate).
Run alone with ``python -m bench.economy``.
"""

import math
import os

from consensus.channel import sign_voucher
from consensus.micropay import compute_mp_commitment, sign_mp_ticket
from consensus.params import get_params
from consensus.ticket import sign_ticket
from consensus.tx import (make_channel_close, make_channel_open, make_escrow_create,
                          make_mp_claim, make_mp_escrow, make_redeem)
from devnet.compare_workload import make_workload

PAYMENTS = 10**6
MERCHANTS = 100
RATE = 1_000          # payments per block, all merchants together
WIN_BITS = 5          # p = 1/32, as compare's default
VALUE = 100_000       # units per payment (sizes barely depend on it)
SIG_BYTES = 64        # MICROPAY's σ1 on the release transaction travels with the ticket

PAPER_TICKET = (110, 274)        # bytes, customer -> merchant: MicroCash, MICROPAY
PAPER_CLAIM = (360, 605)         # bytes, claim transaction: MicroCash, MICROPAY
PAPER_DATA_RATIO = 0.5           # "~50 % less data on the blockchain"
PAPER_ESCROWS_PER_S = 1019       # MICROPAY escrows/s at 32,471 tickets/s (31 ms RTT)


def report(name: str, figure: float, ref_name: str, reference: float) -> None:
    """One line: figure, reference, ratio."""
    ratio = figure / reference if reference else float("nan")
    print(f"{name:<46} {figure:>14,.2f}   {ref_name:<34} {reference:>14,.2f}   "
          f"ratio {ratio:6.3f}")


def sizes() -> dict[str, int]:
    """Encoded sizes (bytes) of real transactions and off-chain messages."""
    s, g, e = os.urandom(32), os.urandom(32), os.urandom(32)
    params = get_params("regtest")
    w = make_workload(params, MERCHANTS, RATE, VALUE, PAYMENTS // RATE, WIN_BITS, 2)
    merchants = [os.urandom(32) for _ in range(MERCHANTS)]
    big = 2**40  # amounts of realistic magnitude (msgpack sizes depend on them)
    create = make_escrow_create(s, g, 5, 1000, big, big, 1, 1 << WIN_BITS, w.beta, RATE,
                                w.draw_len, merchants)
    t1 = [sign_ticket(s, g, e, 7, 10**6 + i) for i in range(2)]
    redeem1, redeem2 = make_redeem(s, g, 1000, t1[:1]), make_redeem(s, g, 1000, t1)
    r1, r2 = os.urandom(16), os.urandom(16)
    mp_ticket = sign_mp_ticket(s, g, e, compute_mp_commitment(r1), r2, merchants[0])
    mp_escrow = make_mp_escrow(s, g, 5, 1000, w.beta, WIN_BITS, 10**6)
    mp_claim = make_mp_claim(s, g, 1000, e, r1, r2, mp_ticket.ticket_sig)
    deposit = VALUE * RATE // MERCHANTS * (PAYMENTS // RATE)
    voucher = sign_voucher(s, g, e, PAYMENTS // MERCHANTS, deposit)
    return {"create": len(create.encode()), "redeem1": len(redeem1.encode()),
            "ticket_in_redeem": len(redeem2.encode()) - len(redeem1.encode()),
            "ticket": len(t1[0].encode()), "mp_ticket": len(mp_ticket.encode()) + SIG_BYTES,
            "mp_commitment": 32, "mp_escrow": len(mp_escrow.encode()),
            "mp_claim": len(mp_claim.encode()),
            "open": len(make_channel_open(s, g, 5, 1000, merchants[0], deposit, deposit // 50,
                                          10**6).encode()),
            "close": len(make_channel_close(s, g, 1000, e, voucher).encode()),
            "voucher": len(voucher.encode()), "draw_len": w.draw_len}


def model(sz: dict[str, int]) -> dict[str, dict[str, float]]:
    """Transactions and bytes on chain per scheme for the module's workload."""
    m, p = MERCHANTS, 1 / (1 << WIN_BITS)
    winners = PAYMENTS * p
    groups = PAYMENTS / (RATE * sz["draw_len"])
    k = RATE * sz["draw_len"] * p
    redeems = groups * m * (1 - (1 - 1 / m) ** k)
    microcash_txs = 1 + redeems
    microcash_bytes = sz["create"] + redeems * sz["redeem1"] + (winners - redeems) * sz["ticket_in_redeem"]
    per_merchant_rate = RATE / m
    pool = max(2, math.ceil(3 * per_merchant_rate * p) + 1)
    initial = m * (pool + 1)
    micropay_txs = initial + 2 * winners
    micropay_bytes = (initial + winners) * sz["mp_escrow"] + winners * sz["mp_claim"]
    return {"microcash": {"txs": microcash_txs, "bytes": microcash_bytes, "escrows": 1},
            "micropay": {"txs": micropay_txs, "bytes": micropay_bytes,
                         "escrows": initial + winners},
            "channels": {"txs": 2 * m, "bytes": m * (sz["open"] + sz["close"]), "escrows": m}}


def run_all() -> None:
    """Print the figures, one line each."""
    sz = sizes()
    out = model(sz)
    mc, mp, ch = out["microcash"], out["micropay"], out["channels"]
    print(f"On-chain economy per {PAYMENTS:,} payments to {MERCHANTS} merchants "
          f"({RATE} payments/block, p = 2^-{WIN_BITS}; sizes of real encoded txs)")
    report("ticket bytes: MicroCash", sz["ticket"], "paper: MicroCash ticket", PAPER_TICKET[0])
    report("ticket bytes: MICROPAY (ticket + σ1)", sz["mp_ticket"], "paper: MICROPAY ticket",
           PAPER_TICKET[1])
    report("ticket ratio MicroCash/MICROPAY", sz["ticket"] / sz["mp_ticket"],
           "paper: 110/274", PAPER_TICKET[0] / PAPER_TICKET[1])
    report("claim tx bytes: REDEEM of one ticket", sz["redeem1"], "paper: MicroCash claim",
           PAPER_CLAIM[0])
    report("claim tx bytes: MP_CLAIM", sz["mp_claim"], "paper: MICROPAY claim", PAPER_CLAIM[1])
    report("claim ratio REDEEM/MP_CLAIM", sz["redeem1"] / sz["mp_claim"], "paper: 360/605",
           PAPER_CLAIM[0] / PAPER_CLAIM[1])
    report("chain bytes per win MicroCash/MICROPAY",
           (mc["bytes"] - sz["create"]) / (PAYMENTS / (1 << WIN_BITS))
           / (sz["mp_claim"] + sz["mp_escrow"]), "paper: 360/605", PAPER_CLAIM[0] / PAPER_CLAIM[1])
    report("escrows: MicroCash", mc["escrows"], "MICROPAY escrows", mp["escrows"])
    # The paper's model: one MICROPAY escrow serves one exchange per RTT (31 ms), so a
    # customer issuing 32,471 tickets/s needs rate × RTT escrows; on this chain each win
    # also consumes its escrow, so a fresh one is created per win (rate × p per second).
    report("MICROPAY escrows at 32,471 tickets/s × 31 ms RTT", 32_471 * 0.031,
           "paper: 1019 escrows (> 1000)", PAPER_ESCROWS_PER_S)
    report("MICROPAY escrows created/s here (one per win)", 32_471 / (1 << WIN_BITS),
           "paper: 1019 escrows/s", PAPER_ESCROWS_PER_S)
    report("txs: MicroCash", mc["txs"], "txs: MICROPAY", mp["txs"])
    report("bytes: MicroCash", mc["bytes"], "bytes: MICROPAY", mp["bytes"])
    report("bytes ratio MicroCash/MICROPAY", mc["bytes"] / mp["bytes"],
           "paper: ~50 % less data", PAPER_DATA_RATIO)
    report("txs ratio MicroCash/MICROPAY", mc["txs"] / mp["txs"], "paper: ~50 % less data",
           PAPER_DATA_RATIO)
    report("txs: MicroCash", mc["txs"], "txs: channels (2 per merchant)", ch["txs"])
    report("bytes: MicroCash", mc["bytes"], "bytes: channels", ch["bytes"])
    report("bytes ratio MicroCash/channels", mc["bytes"] / ch["bytes"], "(no paper figure) 1",
           1)
    report("txs ratio MicroCash/channels", mc["txs"] / ch["txs"], "(no paper figure) 1", 1)


if __name__ == "__main__":
    run_all()
