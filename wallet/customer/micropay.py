"""Payer commands for MICROPAY (SPEC §15): ``micropay escrow create``, ``micropay pay``,
``micropay list``.

``escrow create`` funds MP escrows and remembers their terms for the key; ``pay`` runs
the interactive exchange with a payee's ``merchant serve`` (commitments out, tickets in)
and keeps a pool of ready escrows, funding a fresh one after every win
(``wallet.customer.micropay_payer``). The escrows and the one ticket per escrow whose
outcome is not known yet live in ``<wallet_dir>/micropay.json``
(``wallet.customer.micropaybook``).
"""

from __future__ import annotations

from fractions import Fraction

import click

from consensus.micropay import MAX_WIN_BITS, compute_mp_expected_value
from wallet.amounts import format_amount
from wallet.commands.common import (AMOUNT, DEFAULT_TX_FEE, UNITS, WalletContext,
                                    echo_json, json_option, pass_wallet, timeout_option)
from wallet.customer.micropaybook import MicropayBook, READY
from wallet.customer.micropay_payer import MpPayer, MpTerms, PayeeClient

WIN_BITS = click.IntRange(1, MAX_WIN_BITS)


def _ev_text(amount: int, win_bits: int) -> str:
    ev = compute_mp_expected_value(amount, win_bits)
    return f"{float(ev):g} units" if ev.denominator != 1 else f"{ev} units"


@click.group()
def micropay() -> None:
    """Pay with MICROPAY lottery tickets: fund MP escrows and pay merchants (SPEC §15)."""


@micropay.group("escrow")
def micropay_escrow() -> None:
    """Fund MICROPAY escrows (MP_ESCROW): each pays at most one winning ticket."""


@micropay_escrow.command("create")
@click.argument("payer")
@click.option("--amount", type=AMOUNT, required=True,
              help="Face value of the escrow's one winning ticket (MCASH, or units with 'u').")
@click.option("--win-bits", type=WIN_BITS, required=True,
              help="p = 2^-BITS: a ticket wins when the low BITS bits of r1 XOR r2 are 0. "
                   "Expected value per ticket = amount x 2^-BITS.")
@click.option("--blocks", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Lifetime: refund_height = current round + N.")
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="How many escrows to fund (one MP_ESCROW each).")
@click.option("--fee", type=UNITS, default=DEFAULT_TX_FEE, show_default=True,
              help="Fee in UNITS of each MP_ESCROW.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the MP_ESCROWs are in a block.")
@timeout_option
@json_option
@pass_wallet
def escrow_create(wallet: WalletContext, payer: str, amount: int, win_bits: int, blocks: int,
                  count: int, fee: int, wait: bool, timeout: float, as_json: bool) -> None:
    """Fund COUNT MP escrows from the wallet key PAYER (MP_ESCROW, SPEC §15).

    The terms are remembered: `micropay pay` funds fresh escrows on them after each win.
    Prints the escrow ids (known before confirmation: H(b"mp-escrow", txid)).
    """
    if amount <= 0:
        raise click.BadParameter("must be positive", param_hint="--amount")
    params = wallet.params()
    if blocks > params.max_escrow_rounds:
        raise click.BadParameter(f"at most {params.max_escrow_rounds} on the {params.name} "
                                 "chain", param_hint="--blocks")
    payer_obj = MpPayer(wallet, payer, MpTerms(amount, win_bits, blocks, fee))
    records = payer_obj.fund(count, template=True)
    book = MicropayBook(wallet.wallet_dir)
    status = "sent"
    if wait:
        for r in records:
            wallet.wait_confirmed(r.txid, timeout)
        payer_obj.refresh(pending_only=True)
        status = "confirmed"
    result = {"escrows": [{"mp_escrow_id": r.mp_escrow_id, "txid": r.txid,
                           "refund_height": r.refund_height,
                           "status": (book.get(r.mp_escrow_id) or r).status} for r in records],
              "amount": amount, "win_bits": win_bits, "fee": fee, "status": status,
              "expected_value": str(compute_mp_expected_value(amount, win_bits))}
    if as_json:
        echo_json(result)
        return
    for r in records:
        click.echo(r.mp_escrow_id)
    click.echo(f"{count} MP escrow(s) of {format_amount(amount)} at p = 2^-{win_bits} "
               f"(a ticket is worth {_ev_text(amount, win_bits)}), {status}; refunded at "
               f"height {records[0].refund_height}")


@micropay.command("pay")
@click.argument("payer")
@click.option("--to", "url", required=True, metavar="URL",
              help="The payee's `merchant serve`, e.g. http://127.0.0.1:8080.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Payments (tickets) to make.")
@click.option("--pool", type=click.IntRange(1, 1000), default=2, show_default=True,
              help="Ready MP escrows to keep: after a win the next ticket uses another one "
                   "while a fresh escrow confirms. Size it above the wins expected per block.")
@click.option("--payee", metavar="NAME|ADDRESS", default=None,
              help="Check that the service is this payee before signing.")
@click.option("--amount", type=AMOUNT, default=None,
              help="Terms of fresh escrows (default: those of the last `micropay escrow "
                   "create` of PAYER).")
@click.option("--win-bits", type=WIN_BITS, default=None, help="As for `escrow create`.")
@click.option("--blocks", type=click.IntRange(min=2), default=None, help="As for `escrow create`.")
@click.option("--fee", type=UNITS, default=None, help="Fee in UNITS of each fresh MP_ESCROW.")
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds to wait in all for escrows of the pool to confirm.")
@json_option
@pass_wallet
def micropay_pay(wallet: WalletContext, payer: str, url: str, count: int, pool: int,
                 payee: str | None, amount: int | None, win_bits: int | None,
                 blocks: int | None, fee: int | None, timeout: float, as_json: bool) -> None:
    """Pay COUNT MICROPAY tickets from PAYER to the payee at --to (SPEC §15, paper §2.1).

    Per payment: the payee's commitment c (fetched in batches), a ready escrow with no
    ticket of unknown outcome, r2 recorded durably, then the signed ticket; the payee's
    answer reveals r1, so a win is known at once: that escrow is never used again and a
    fresh one is funded (the pool keeps --pool usable). A ticket whose answer was lost is
    sent again first. Waits for a block only when no escrow of the pool is ready.
    """
    template = MicropayBook(wallet.wallet_dir).template(payer) or {}
    given = {"amount": amount, "win_bits": win_bits, "blocks": blocks, "fee": fee}
    merged = {**{"blocks": 1000, "fee": DEFAULT_TX_FEE}, **template,
              **{k: v for k, v in given.items() if v is not None}}
    terms = (MpTerms(merged["amount"], merged["win_bits"], merged["blocks"], merged["fee"])
             if "amount" in merged and "win_bits" in merged else None)
    payee_check = None if payee is None else wallet.resolve_address(payee, "--payee")
    payer_obj = MpPayer(wallet, payer, terms, pool)
    clients: dict[str, PayeeClient] = {}

    def client_for(u: str) -> PayeeClient:
        if u not in clients:
            clients[u] = PayeeClient(u)
        return clients[u]

    try:
        stats = payer_obj.pay(client_for(url.rstrip("/")), count, payee_check, timeout,
                              client_for)
    finally:
        for c in clients.values():
            c.close()
    result = {**stats.to_json(), "payer": payer, "to": url,
              "ready": sum(1 for r in payer_obj.book.all(payer) if r.status == READY)}
    if terms is not None:
        result["expected_value"] = str(compute_mp_expected_value(terms.amount, terms.win_bits)
                                       * stats.payments)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{stats.payments} tickets accepted, {stats.wins} winning; "
               f"{stats.funded} fresh escrows funded, {stats.stalls} waits for a ready escrow "
               f"({stats.stall_seconds:.2f} s); {stats.seconds:.2f} s in all")
    if stats.resent:
        click.echo(f"{stats.resent} ticket(s) left pending by an earlier run delivered again "
                   f"({stats.resent_accepted} accepted)")


@micropay.command("list")
@click.argument("payer", required=False)
@json_option
@pass_wallet
def micropay_list(wallet: WalletContext, payer: str | None, as_json: bool) -> None:
    """The MP escrows this wallet funded: status, tickets, pending ticket, refund height.

    With a node (--datadir) the statuses are brought up to date from the chain first
    (confirmed, claimed, refunded).
    """
    book = MicropayBook(wallet.wallet_dir)
    if wallet.node_configured():
        from wallet.rpcclient import RpcConnectionError

        try:
            for key in sorted({r.payer_key for r in book.all(payer)}):
                MpPayer(wallet, key, None).refresh()
        except RpcConnectionError:
            pass  # the book as it is
    records = book.all(payer)
    if as_json:
        echo_json({"escrows": [r.to_json() for r in records]})
        return
    if not records:
        click.echo("no MP escrows")
    for r in records:
        ev = Fraction(r.amount, 1 << r.win_bits)
        click.echo(f"{r.mp_escrow_id}: {r.status}, {r.tickets} tickets "
                   f"(worth {float(ev):g} units each), {r.amount} units, refund at "
                   f"{r.refund_height}" + (", a ticket pending" if r.pending else "")
                   + (", won" if r.won_c else ""))
