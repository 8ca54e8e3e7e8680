"""An escrow's issuing schedule as text and JSON (SPEC §3.2), pure functions.

From an ``EscrowState``: the issuing rounds ``start … start + l_esc − 1`` with their
sequence numbers ``[(r − start)·tkt_rate, (r − start + 1)·tkt_rate)``, the draw groups with
their rounds, seqnos, ``t_draw(g)`` and ``t_expire(g)``, and ``t_refund``. Long lists are
abbreviated in text (never in JSON).
"""

from __future__ import annotations

from typing import Any

from consensus.address import encode_address
from consensus.escrow import (EscrowState, compute_seqno_range, compute_start, compute_t_draw,
                              compute_t_expire, compute_t_refund)
from consensus.params import ChainParams
from wallet.amounts import format_amount

MAX_ROWS = 12  # rows of a list printed in full; longer ones show the head and the tail
HEAD_ROWS, TAIL_ROWS = 5, 2


def build_escrow_state(params: ChainParams, *, owner: bytes, escrow_amount: int,
                       penalty_amount: int, win_num: int, win_den: int, beta: int,
                       tkt_rate: int, draw_len: int, l_esc: int, merchants: list[bytes],
                       created_height: int) -> EscrowState:
    """The state an ESCROW_CREATE included at ``created_height`` starts with (SPEC §3.2)."""
    start = compute_start(params, created_height)
    return EscrowState(owner=owner, escrow_balance=escrow_amount,
                       penalty_balance=penalty_amount, win_num=win_num, win_den=win_den,
                       beta=beta, tkt_rate=tkt_rate, draw_len=draw_len, l_esc=l_esc,
                       merchants=tuple(merchants), created_height=created_height, start=start,
                       t_refund=compute_t_refund(params, start, l_esc, draw_len),
                       broken=False)


def group_rows(params: ChainParams, escrow: EscrowState) -> list[dict[str, int]]:
    """One dict per draw group: rounds, seqnos ``[lo, hi)``, ``t_draw``, ``t_expire``."""
    a = escrow.draw_size
    return [{"group": g,
             "first_round": escrow.start + g * escrow.draw_len,
             "last_round": escrow.start + (g + 1) * escrow.draw_len - 1,
             "seqno_lo": g * a, "seqno_hi": (g + 1) * a,
             "t_draw": compute_t_draw(params, escrow, g),
             "t_expire": compute_t_expire(params, escrow, g)}
            for g in range(escrow.groups)]


def schedule_json(params: ChainParams, escrow: EscrowState,
                  escrow_id: bytes | None = None) -> dict[str, Any]:
    """The escrow and its whole schedule as a JSON-ready dict (amounts in units)."""
    rounds = []
    for r in range(escrow.start, escrow.start + escrow.l_esc):
        lo, hi = compute_seqno_range(escrow, r)
        rounds.append({"round": r, "seqno_lo": lo, "seqno_hi": hi})
    return {
        "escrow_id": escrow_id.hex() if escrow_id is not None else None,
        "owner": encode_address(escrow.owner),
        "merchants": [{"index": i, "address": encode_address(m), "hex": m.hex()}
                      for i, m in enumerate(escrow.merchants)],
        "escrow_balance": escrow.escrow_balance, "penalty_balance": escrow.penalty_balance,
        "win_num": escrow.win_num, "win_den": escrow.win_den, "beta": escrow.beta,
        "tkt_rate": escrow.tkt_rate, "draw_len": escrow.draw_len, "l_esc": escrow.l_esc,
        "N": escrow.N, "draw_size": escrow.draw_size, "k": escrow.winners_per_draw,
        "groups_count": escrow.groups, "created_height": escrow.created_height,
        "start": escrow.start, "last_round": escrow.start + escrow.l_esc - 1,
        "t_refund": escrow.t_refund, "broken": escrow.broken,
        "rounds": rounds, "groups": group_rows(params, escrow),
    }


def abbreviate(rows: list[str], indent: str = "    ") -> list[str]:
    """``rows`` indented; more than ``MAX_ROWS`` keep the first 5 and last 2 with a gap line."""
    if len(rows) > MAX_ROWS:
        hidden = len(rows) - HEAD_ROWS - TAIL_ROWS
        rows = rows[:HEAD_ROWS] + [f"... {hidden} more ..."] + rows[-TAIL_ROWS:]
    return [indent + row for row in rows]


def _seqnos(lo: int, hi: int) -> str:
    return f"seqno {lo}" if hi - lo == 1 else f"seqnos {lo}-{hi - 1}"


def schedule_lines(params: ChainParams, escrow: EscrowState,
                   escrow_id: bytes | None = None) -> list[str]:
    """The schedule as the text ``escrow create`` and ``escrow show`` print."""
    k, a = escrow.winners_per_draw, escrow.draw_size
    last_round = escrow.start + escrow.l_esc - 1
    lines = [
        f"escrow {escrow_id.hex() if escrow_id is not None else '(id known once mined)'}",
        f"  owner:      {encode_address(escrow.owner)}",
        "  merchants:",
        *abbreviate([f"{i}: {encode_address(m)}" for i, m in enumerate(escrow.merchants)]),
        f"  escrow:     {format_amount(escrow.escrow_balance)}",
        f"  penalty:    {format_amount(escrow.penalty_balance)}"
        + ("  (BROKEN: penalty burned)" if escrow.broken else ""),
        f"  lottery:    p = {escrow.win_num}/{escrow.win_den}, beta = {escrow.beta} units per "
        f"winning ticket, k = {k} winners per draw of {a} seqnos",
        f"  lifetime:   {escrow.l_esc} rounds x {escrow.tkt_rate} seqnos = N = {escrow.N} "
        f"seqnos, {escrow.groups} draw groups of {escrow.draw_len} rounds",
        f"  created:    height {escrow.created_height}; issuing rounds {escrow.start}"
        f"-{last_round}",
        "  rounds:",
    ]
    round_rows = []
    for r in range(escrow.start, last_round + 1):
        round_rows.append(f"round {r}: {_seqnos(*compute_seqno_range(escrow, r))}")
    lines += abbreviate(round_rows)
    lines.append("  draw groups:")
    lines += abbreviate([
        f"group {row['group']}: rounds {row['first_round']}-{row['last_round']}, "
        f"{_seqnos(row['seqno_lo'], row['seqno_hi'])}, t_draw {row['t_draw']} (drawn with "
        f"block {row['t_draw'] + 1}), redeemable until t_expire {row['t_expire']}"
        for row in group_rows(params, escrow)])
    lines.append(f"  t_refund:   {escrow.t_refund} (the residue returns to the owner with "
                 f"block {escrow.t_refund})")
    return lines
