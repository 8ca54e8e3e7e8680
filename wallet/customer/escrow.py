"""Escrow commands: ``escrow create``, ``escrow show``, ``escrow list`` (SPEC §3, §6, §7, §9)."""

from __future__ import annotations

from typing import Any

import click

from consensus.errors import ConsensusError
from consensus.escrow import (EscrowState, compute_escrow_amount, compute_escrow_id,
                              compute_min_penalty, verify_escrow_params)
from consensus.params import ChainParams
from consensus.tx import Tx, make_escrow_create
from wallet.amounts import MAX_AMOUNT, format_amount
from wallet.commands.common import (DEFAULT_TX_FEE, ESCROW_ID, FRACTION, POSITIVE_UNITS,
                                    UNITS, TxRejected, WalletContext, WalletError, echo_json,
                                    json_option, pass_wallet, timeout_option)
from wallet.customer.schedule import (build_escrow_state, group_rows, schedule_json,
                                      schedule_lines)
from wallet.rpcclient import RpcConnectionError
from wallet.tlsconfig import cacert_option
from wallet.walletdb import EscrowRecord

MAX_WINNERS_SHOWN = 16  # winners printed per group in text


@click.group()
def escrow() -> None:
    """Create escrows and follow their draws, redeems and refund."""


def _explain(reason: str, params: ChainParams, k_text: str) -> click.BadParameter:
    """A readable message for a SPEC §3.1 reject reason found before sending."""
    text = {
        "bad-escrow-params": f"need beta > 0, tkt-rate > 0 and 1 <= draw-len <= "
                             f"{params.draw_len_max} on the {params.name} chain",
        "bad-merchants": f"need 1 to {params.max_merchants} distinct merchants",
        "bad-winners": f"k = p x tkt-rate x draw-len = {k_text} winners per draw must be a "
                       f"whole number >= 1, with tkt-rate x draw-len <= "
                       f"{params.max_draw_size} and k <= {params.max_winners}",
        "bad-lifetime": f"--rounds must be a multiple of --draw-len, at most "
                        f"{params.max_escrow_rounds}",
    }.get(reason, reason)
    return click.BadParameter(f"{text} ({reason})")


@escrow.command("create")
@click.argument("sender", metavar="FROM")
@click.option("--merchant", "merchants", multiple=True, metavar="NAME|ADDRESS",
              help="A beneficiary; repeat for each. The order gives merchant_index 0, 1, ...")
@click.option("--for-merchant", "for_merchants", multiple=True, metavar="URL",
              help="A merchant service whose terms (GET URL/v1/terms) the escrow must meet; "
                   "repeat for each. Its merchant is added after the --merchant ones, and "
                   "the options not given below are picked to meet every merchant's terms.")
@click.option("--beta", type=POSITIVE_UNITS, default=None,
              help="UNITS paid per winning ticket (beta); picked with --for-merchant.")
@click.option("--p", "p", type=FRACTION, default=None,
              help="Winning probability NUM/DEN, e.g. 1/300; picked with --for-merchant.")
@click.option("--tkt-rate", type=click.IntRange(min=1), required=True,
              help="Tickets (sequence numbers) per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Issuing rounds l_esc; a multiple of --draw-len. With --for-merchant, "
                   "default: the least lifetime the terms require.")
@click.option("--draw-len", type=click.IntRange(min=1), default=None,
              help="Rounds per draw group (at most the chain's draw_len_max, 8); picked "
                   "with --for-merchant.")
@click.option("--penalty", type=UNITS, default=None,
              help="Penalty deposit in UNITS; default: the least valid one, floor(B)+1 of "
                   "equation (2) for this chain.")
@click.option("--fee", type=UNITS, default=DEFAULT_TX_FEE, show_default=True,
              help="Fee in UNITS paid to the miner.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the including block; its hash fixes the escrow id.")
@timeout_option
@json_option
@cacert_option
@pass_wallet
def escrow_create(wallet: WalletContext, sender: str, merchants: tuple[str, ...],
                  for_merchants: tuple[str, ...], beta: int | None,
                  p: tuple[int, int] | None, tkt_rate: int, rounds: int | None,
                  draw_len: int | None, penalty: int | None, fee: int, wait: bool,
                  timeout: float, as_json: bool) -> None:
    """Lock coins of the wallet key FROM in an escrow for the given merchants (SPEC §3.1).

    The escrow amount is beta x p x tkt-rate x rounds (paper equation (1)). The balance
    of FROM must cover escrow + penalty + fee. With --wait (default) prints the escrow id
    and the whole schedule: seqnos per round, draw groups with t_draw / t_expire, and
    t_refund; with --no-wait prints the txid (`escrow list` finds the id later).

    With --for-merchant URL (repeatable) the merchants' published terms are read and the
    parameters not given are picked to meet all of them (price p x beta, p and beta
    ranges, lifetime, penalty margin), or the term that cannot be met is named.
    """
    addresses = [wallet.resolve_address(m, "--merchant") for m in merchants]
    if for_merchants:
        if len(set(addresses)) != len(addresses):
            raise click.BadParameter("the same merchant is given twice", param_hint="--merchant")
        from wallet.customer.terms import plan_for_merchants

        addresses, pick = plan_for_merchants(wallet, for_merchants, addresses, tkt_rate,
                                             beta=beta, p=p, rounds=rounds,
                                             draw_len=draw_len, penalty=penalty)
        beta, p, rounds = pick.beta, (pick.win_num, pick.win_den), pick.rounds
        draw_len, penalty = pick.draw_len, pick.penalty
    tx, record, least = prepare_escrow_create(wallet, sender, addresses, beta, p, tkt_rate,
                                              rounds, draw_len, penalty, fee)
    txid, amount, penalty = record.txid, record.escrow_amount, record.penalty_amount
    submit_escrow_create(wallet, tx, record)
    if not wait:
        if as_json:
            echo_json({"txid": txid, "status": "mempool", "escrow_amount": amount,
                       "penalty_amount": penalty, "fee": fee, "min_penalty": least})
        else:
            click.echo(txid)
            click.echo(f"escrow of {format_amount(amount)} + penalty {penalty} units sent; "
                       "its id is fixed by the block that includes it: see `escrow list`")
        return
    found = wallet.wait_confirmed(txid, timeout)
    params = wallet.params()
    escrow_id, state, block_hash = confirm_escrow_create(wallet, record, found)
    if as_json:
        echo_json({**schedule_json(params, state, escrow_id), "txid": txid,
                   "block_hash": block_hash, "escrow_amount": amount,
                   "penalty_amount": penalty, "fee": fee, "min_penalty": least})
        return
    click.echo("\n".join(schedule_lines(params, state, escrow_id)))
    click.echo(f"  txid:       {txid} (height {state.created_height}, fee {fee} units)")


def prepare_escrow_create(wallet: WalletContext, sender: str, addresses: list[bytes],
                          beta: int | None, p: tuple[int, int] | None, tkt_rate: int,
                          rounds: int | None, draw_len: int | None, penalty: int | None,
                          fee: int) -> tuple[Tx, EscrowRecord, int]:
    """Check the parameters (SPEC §3.1, with readable messages) and the balance, and sign
    the ESCROW_CREATE; ``(tx, record to keep, least valid penalty)``. ``penalty`` None
    means the least valid one. Raises click.BadParameter or WalletError."""
    if len(set(addresses)) != len(addresses):
        raise click.BadParameter("the same merchant is given twice", param_hint="--merchant")
    missing = [name for name, value in (("--merchant", addresses), ("--beta", beta),
                                        ("--p", p), ("--rounds", rounds),
                                        ("--draw-len", draw_len)) if not value]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or give --for-merchant URL "
                               "to pick them from the merchants' terms)")
    win_num, win_den = p
    try:
        amount = compute_escrow_amount(win_num, win_den, beta, tkt_rate, rounds)
    except ValueError:
        raise click.BadParameter(
            f"beta x p x tkt-rate x rounds = {beta} x {win_num}/{win_den} x {tkt_rate} x "
            f"{rounds} is not a whole number of units (paper equation (1))") from None
    params = wallet.params()
    k_text = f"{win_num * tkt_rate * draw_len}/{win_den}"
    try:  # every SPEC §3.1 rule except the penalty, checked here for a clear message
        verify_escrow_params(params, amount, MAX_AMOUNT, win_num, win_den, beta, tkt_rate,
                             draw_len, addresses)
    except ConsensusError as exc:
        raise _explain(exc.reason, params, k_text) from None
    least = compute_min_penalty(params, len(addresses), win_num, win_den, beta, tkt_rate,
                                draw_len)
    if penalty is None:
        penalty = least
    elif penalty < least:
        raise click.BadParameter(f"{penalty} units is too low: the least valid penalty for "
                                 f"these parameters is {least} units (SPEC §3.1 eq. (2))",
                                 param_hint="--penalty")
    owner = wallet.key_address(sender)
    have = int(wallet.account(owner)["balance"])
    need = amount + penalty + fee
    if need > MAX_AMOUNT:
        raise click.BadParameter(f"escrow + penalty + fee = {need} units is too large")
    if need > have:
        raise WalletError(
            f"insufficient funds: {sender} has {format_amount(have)}; the escrow needs "
            f"{amount} (escrow) + {penalty} (penalty) + {fee} (fee) = {format_amount(need)}")
    seed = wallet.load_seed(sender)
    genesis = wallet.genesis_hash()
    tx = make_escrow_create(seed, genesis, wallet.next_nonce(owner), fee, amount, penalty,
                            win_num, win_den, beta, tkt_rate, draw_len, addresses)
    txid = tx.txid().hex()
    record = EscrowRecord(
        txid=txid, owner_key=sender, owner=owner.hex(), merchants=[m.hex() for m in addresses],
        chain=params.name, genesis_hash=genesis.hex(), escrow_amount=amount,
        penalty_amount=penalty, win_num=win_num, win_den=win_den, beta=beta,
        tkt_rate=tkt_rate, draw_len=draw_len, l_esc=rounds, fee=fee)
    return tx, record, least


def submit_escrow_create(wallet: WalletContext, tx: Tx, record: EscrowRecord) -> None:
    """Remember ``record`` as pending, then send ``tx``; forgets it again if the node
    rejects it (TxRejected)."""
    wallet.db.add_pending_escrow(record)
    try:
        wallet.submit(tx)
    except TxRejected:
        wallet.db.drop_pending_escrow(record.txid)
        raise


def confirm_escrow_create(wallet: WalletContext, record: EscrowRecord,
                          found: dict[str, Any]) -> tuple[bytes, EscrowState, str]:
    """The escrow of a mined ESCROW_CREATE (``found``: its ``gettransaction`` reply):
    ``(escrow_id, state as created, block_hash)``; the wallet's record is confirmed."""
    height = int(found["height"])
    block_hash = found.get("block_hash") or wallet.call("getblockhash", height)
    escrow_id = compute_escrow_id(bytes.fromhex(block_hash), bytes.fromhex(record.txid))
    state = build_escrow_state(wallet.params(), owner=bytes.fromhex(record.owner),
                               escrow_amount=record.escrow_amount,
                               penalty_amount=record.penalty_amount, win_num=record.win_num,
                               win_den=record.win_den, beta=record.beta,
                               tkt_rate=record.tkt_rate, draw_len=record.draw_len,
                               l_esc=record.l_esc,
                               merchants=[bytes.fromhex(m) for m in record.merchants],
                               created_height=height)
    wallet.db.confirm_escrow(record.txid, escrow_id.hex(), block_hash, height, state.start,
                             state.t_refund)
    return escrow_id, state, block_hash


# --------------------------------------------------------------------------- show


def _group_status(row: dict[str, int], t: int) -> str:
    cur = t + 1
    if cur < row["first_round"]:
        return "not started"
    if cur <= row["last_round"]:
        return "issuing"
    if t < row["t_draw"] + 1:
        return f"waiting for the draw (block {row['t_draw'] + 1})"
    if t < row["t_expire"]:
        return f"drawn; redeemable until {row['t_expire']}"
    return "drawn; redeem window closed"


def _show_groups(wallet: WalletContext, params: ChainParams, state: EscrowState,
                 escrow_id: str, t: int, only: set[int] | None) -> list[dict[str, Any]]:
    """Per group: status, winners (once drawn, via getdraw), redeemed records."""
    redeemed: dict[int, list[dict[str, int]]] = {}
    for seqno, index, height in wallet.call("getredeemed", escrow_id):
        redeemed.setdefault(seqno // state.draw_size, []).append(
            {"seqno": seqno, "merchant_index": index, "height": height})
    groups = []
    for row in group_rows(params, state):
        g = row["group"]
        if only is not None and g not in only:
            continue
        winners = None
        if t >= row["t_draw"] + 1:
            winners = wallet.call("getdraw", escrow_id, g)["winners"]
        groups.append({**row, "status": _group_status(row, t), "winners": winners,
                       "redeemed": redeemed.get(g, [])})
    return groups


def _group_line(grp: dict[str, Any]) -> str:
    text = f"group {grp['group']}: {grp['status']}"
    if grp["winners"] is not None:
        shown = grp["winners"][:MAX_WINNERS_SHOWN]
        more = len(grp["winners"]) - len(shown)
        text += f"; winners {', '.join(map(str, shown))}" + (f" (+{more})" if more else "")
    if grp["redeemed"]:
        text += "; redeemed " + ", ".join(
            f"{r['seqno']} by merchant {r['merchant_index']} at {r['height']}"
            for r in grp["redeemed"])
    elif grp["winners"] is not None:
        text += "; nothing redeemed yet"
    return text


@escrow.command("show")
@click.argument("escrow_id", type=ESCROW_ID)
@json_option
@pass_wallet
def escrow_show(wallet: WalletContext, escrow_id: str, as_json: bool) -> None:
    """Show ESCROW_ID: balances, schedule, each draw's winners and the redeemed tickets.

    Winners appear once block t_draw+1 is on chain (getdraw); redeemed records come
    from getredeemed. An escrow the node no longer knows was refunded (or never mined).
    """
    state_json = wallet.call("getescrow", escrow_id)
    t = wallet.height()
    record = wallet.db.escrow(escrow_id)
    if state_json is None:
        refunded = record is not None and record.t_refund is not None and t >= record.t_refund
        if refunded:
            message = (f"escrow {escrow_id} was refunded with block {record.t_refund}: the "
                       "residue went back to the owner and its records are gone (SPEC §9)")
        else:
            message = (f"escrow {escrow_id} is unknown to the node: not mined on this chain, "
                       "or already refunded")
        if as_json:
            echo_json({"escrow_id": escrow_id, "height": t, "state": None,
                       "status": "refunded" if refunded else "unknown",
                       "record": record.to_json() if record else None})
        else:
            click.echo(message)
        return
    params = wallet.params()
    state = EscrowState.from_rpc(state_json)
    if as_json:
        groups = _show_groups(wallet, params, state, escrow_id, t, None)
        echo_json({**schedule_json(params, state, bytes.fromhex(escrow_id)), "height": t,
                   "status": "broken" if state.broken else "active", "groups": groups})
        return
    lines = schedule_lines(params, state, bytes.fromhex(escrow_id))
    click.echo("\n".join(lines))
    click.echo(f"  now:        best height {t}, current round {t + 1}"
               + ("; BROKEN (no new tickets are accepted)" if state.broken else ""))
    n = state.groups
    shown = set(range(n)) if n <= 12 else set(range(5)) | {n - 2, n - 1}
    rows = [_group_line(g) for g in _show_groups(wallet, params, state, escrow_id, t, shown)]
    if n > 12:
        rows = rows[:5] + [f"... {n - 7} more groups (all of them with --json) ..."] + rows[5:]
    click.echo("  draws:")
    click.echo("\n".join("    " + row for row in rows))


# --------------------------------------------------------------------------- list


def _resolve_pending(wallet: WalletContext) -> list[str]:
    """Give pending escrows whose transaction is now mined their id; notes for the rest."""
    notes = []
    for record in wallet.db.pending_escrows():
        if record.genesis_hash != wallet.genesis_hash().hex():
            continue
        found = wallet.call("gettransaction", record.txid)
        if isinstance(found, dict) and found.get("status") == "confirmed":
            height = int(found["height"])
            block_hash = found.get("block_hash") or wallet.call("getblockhash", height)
            state = build_escrow_state(
                wallet.params(), owner=bytes.fromhex(record.owner),
                escrow_amount=record.escrow_amount, penalty_amount=record.penalty_amount,
                win_num=record.win_num, win_den=record.win_den, beta=record.beta,
                tkt_rate=record.tkt_rate, draw_len=record.draw_len, l_esc=record.l_esc,
                merchants=[bytes.fromhex(m) for m in record.merchants], created_height=height)
            eid = compute_escrow_id(bytes.fromhex(block_hash), bytes.fromhex(record.txid))
            wallet.db.confirm_escrow(record.txid, eid.hex(), block_hash, height, state.start,
                                     state.t_refund)
        elif found is None:
            notes.append(f"pending escrow tx {record.txid} is unknown to the node "
                         "(dropped from the mempool?)")
    return notes


def _chain_states(wallet: WalletContext, t: int) -> dict[str, str]:
    """active / broken / refunded / unknown per recorded escrow of the node's chain."""
    states = {}
    for record in wallet.db.escrows():
        if record.genesis_hash != wallet.genesis_hash().hex():
            continue
        found = wallet.call("getescrow", record.escrow_id)
        if found is not None:
            states[record.escrow_id] = "broken" if found["broken"] else "active"
        elif record.t_refund is not None and t >= record.t_refund:
            states[record.escrow_id] = "refunded"
        else:
            states[record.escrow_id] = "unknown"
    return states


@escrow.command("list")
@json_option
@pass_wallet
def escrow_list(wallet: WalletContext, as_json: bool) -> None:
    """List the escrows this wallet created, with their state on the node if one is given.

    Pending creations whose block has arrived since are given their escrow id here.
    """
    notes: list[str] = []
    states: dict[str, str] = {}
    t = None
    if wallet.node_configured():
        try:
            notes = _resolve_pending(wallet)
            t = wallet.height()
            states = _chain_states(wallet, t)
        except RpcConnectionError as exc:
            notes.append(f"node unreachable, states unknown: {exc}")
    rows = [{**record.to_json(), "state": states.get(record.escrow_id, "?")}
            for record in wallet.db.escrows()]
    rows += [{**record.to_json(), "state": "pending"} for record in wallet.db.pending_escrows()]
    if as_json:
        echo_json({"height": t, "escrows": rows, "notes": notes})
        return
    if not rows:
        click.echo("no escrows created by this wallet")
    for row in rows:
        ident = row["escrow_id"] or f"(pending tx {row['txid']})"
        rounds = (f"rounds {row['start']}-{row['start'] + row['l_esc'] - 1}, t_refund "
                  f"{row['t_refund']}" if row["start"] is not None else f"{row['l_esc']} rounds")
        click.echo(f"{ident}  {row['state']:<8}  owner {row['owner_key']}, "
                   f"{len(row['merchants'])} merchant(s), escrow {row['escrow_amount']} + "
                   f"penalty {row['penalty_amount']} units, {rounds}")
    for note in notes:
        click.echo(f"note: {note}")

