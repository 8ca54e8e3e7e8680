"""Payer commands for payment channels: ``channel open``, ``channel pay``, ``channel list``
(SPEC §16).

``open`` sends CHANNEL_OPEN and records the channel in ``<wallet_dir>/channels.json``
(``wallet.customer.channelbook``) before sending; ``channel_id = H(b"channel", txid)`` is
known at once. With ``--sync-interval``, ``--mean-payment-interval`` and ``--price``
(and ``--points-of-sale``) the penalty is seed 003's bound
(``consensus.channel.compute_channel_penalty_guidance``, ``compute_penalty_guidance``).

``pay`` binds voucher ``k + 1`` to the new cumulative durably, then signs it and posts it
to the payee's ``POST {url}/v1/vouchers`` (wire form: ``voucher_request``). A voucher left
unacknowledged by a crash or a lost answer is sent again, unchanged, first. Each accepted
voucher is answered with a receipt signed by the payee's point of sale
(``wallet.receipts``); the wallet verifies and keeps the latest and shows it to
the point of sale it pays next, which may not have heard of the payments made elsewhere.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import click

from consensus.channel import (Voucher, compute_channel_id, compute_channel_penalty_guidance,
                               sign_voucher)
from consensus.tx import make_channel_open
from wallet.amounts import MAX_AMOUNT, format_amount
from wallet.commands.common import (AMOUNT, DEFAULT_TX_FEE, POSITIVE_UNITS, UNITS, HashType,
                                    TxRejected, WalletContext, WalletError, echo_json,
                                    json_option, pass_wallet, payee_answer,
                                    timeout_option)
from wallet.customer.channelbook import ChannelBook, ChannelRecord
from wallet.receipts import Receipt, ReceiptError, verify_receipt
from wallet.tlsconfig import cacert_option

CHANNEL_ID = HashType("channel id")
VOUCHER_PATH = "/v1/vouchers"
SEND_TIMEOUT = 30.0  # seconds for one voucher POST


def voucher_request(channel_id: bytes, voucher: Voucher,
                    receipt: dict | None = None) -> bytes:
    """The JSON body of ``POST /v1/vouchers``: ``{"channel_id": hex, "voucher":
    {"k": int, "cumulative": int, "sig": hex(64 bytes)}}``, plus ``"receipt"`` (the
    payer's latest, ``Receipt.to_json`` form) when given."""
    doc: dict[str, Any] = {"channel_id": channel_id.hex(),
                           "voucher": {"k": voucher.k, "cumulative": voucher.cumulative,
                                       "sig": voucher.sig.hex()}}
    if receipt is not None:
        doc["receipt"] = receipt
    return json.dumps(doc).encode()


def compute_penalty_guidance(interval: Fraction, per_payment: Fraction, price: int,
                             points_of_sale: int, deposit: int) -> tuple[int, int]:
    """``(per_point, penalty)`` in units: what one point of sale can hand out on a stale
    state, seed 003's ``floor(T̂ / Ť · u₂)`` capped at the deposit (a point never accepts
    more than the deposit), and the penalty ``(points_of_sale - 1) · per_point`` — what
    all the other points can hand out before the state reaches them, so a proven cheat
    (deposit + penalty to the payee) always covers it. With two points of sale it is seed
    003's bound itself. Raises ``ValueError`` (``points_of_sale < 1``, bad times)."""
    if points_of_sale < 1:
        raise ValueError("points_of_sale must be >= 1")
    per_point = min(compute_channel_penalty_guidance(interval, per_payment, price), deposit)
    return per_point, (points_of_sale - 1) * per_point


def penalty_explanation(interval: Fraction, per_payment: Fraction, price: int,
                        penalty: int, points_of_sale: int = 2,
                        per_point: int | None = None) -> str:
    """Plain words for seed 003's penalty bound ``p <= T̂ / Ť · u₂`` (SPEC §16) and the
    penalty chosen from it (``compute_penalty_guidance``)."""
    per_point = penalty if per_point is None else per_point
    others = points_of_sale - 1
    times = (f"{others} other point{'s' if others != 1 else ''} of sale x {per_point} = "
             if others != 1 else "")
    return (f"penalty {penalty} units = {times}floor(T^ / T~ x u2) = floor({interval} s / "
            f"{per_payment} s x {price} units) (capped at the deposit): a point of sale "
            f"works up to T^ = {interval} s (its sync interval) on a stale state, taking one "
            f"payment every {per_payment} s of at most {price} units, so a payer who spends "
            f"the same voucher number at another point of sale gains at most {per_point} "
            f"units there before it is caught; with {points_of_sale} points of sale, "
            f"{others} x that. Seed 003 takes T^ / T~ x u2 as the largest penalty reasonable "
            f"for an honest payer, who locks it for the channel's life; an equivocation "
            f"proven with CHANNEL_CHEAT gives the payee deposit + penalty, so cheating "
            f"never pays.")


@click.group()
def channel() -> None:
    """Open payment channels and pay through them with vouchers (SPEC §16)."""


@channel.command("open")
@click.argument("payer")
@click.option("--payee", required=True, metavar="NAME|ADDRESS", help="Who the channel pays.")
@click.option("--deposit", type=AMOUNT, required=True,
              help="Most the channel can pay (MCASH, or units with a 'u' suffix).")
@click.option("--penalty", type=UNITS, default=None,
              help="UNITS the payer loses on a proven equivocation; default 0 (Spilman), or "
                   "the guidance from the options below.")
@click.option("--sync-interval", "--pos-interval", "pos_interval",
              type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Seconds a point of sale works between synchronisations (T^; the "
                   "payee's `merchant serve --sync-interval`).")
@click.option("--mean-payment-interval", "--seconds-per-payment", "seconds_per_payment",
              type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Mean seconds per payment (T~).")
@click.option("--price", type=UNITS, default=None, help="Highest price of one payment (u2).")
@click.option("--points-of-sale", type=click.IntRange(min=1), default=None,
              help="Points of sale of the payee, for the guidance: the penalty covers what "
                   "the N-1 others can hand out on a stale state.  [default: 2, or what "
                   "--guidance-from says]")
@click.option("--guidance-from", "guidance_from", metavar="URL", default=None,
              help="A point of sale of the payee (`merchant serve --point-of-sale`): its "
                   "sync interval and number of points of sale fill --sync-interval and "
                   "--points-of-sale when not given.")
@click.option("--blocks", type=click.IntRange(min=2), required=True,
              help="Lifetime: expiry_height = current round + N.")
@click.option("--fee", type=UNITS, default=DEFAULT_TX_FEE, show_default=True,
              help="Fee in UNITS of the CHANNEL_OPEN.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the CHANNEL_OPEN is in a block.")
@timeout_option
@cacert_option
@json_option
@pass_wallet
def channel_open(wallet: WalletContext, payer: str, payee: str, deposit: int,
                 penalty: int | None, pos_interval: float | None,
                 seconds_per_payment: float | None, price: int | None,
                 points_of_sale: int | None, guidance_from: str | None, blocks: int, fee: int,
                 wait: bool, timeout: float, as_json: bool) -> None:
    """Open a channel from the wallet key PAYER to --payee (CHANNEL_OPEN, SPEC §16).

    Locks deposit + penalty until expiry_height; prints the channel id. Penalty guidance
    (seed 003): give --sync-interval, --mean-payment-interval and --price (and
    --points-of-sale) instead of --penalty and the penalty is
    (points of sale - 1) x floor(T^ / T~ x u2), explained. --guidance-from URL reads T^
    and the number of points of sale from one of the payee's points of sale.
    """
    if guidance_from is not None:
        advertised = _http(guidance_from, f"/v1/channels/{'00' * 32}", None,
                           "read the point of sale's sync interval")
        if pos_interval is None:
            pos_interval = advertised.get("sync_interval")
            if not isinstance(pos_interval, (int, float)) or isinstance(pos_interval, bool):
                raise WalletError(f"{guidance_from} names no sync interval (a single point "
                                  "of sale?); give --sync-interval")
        if points_of_sale is None and isinstance(advertised.get("points_of_sale"), int):
            points_of_sale = max(1, advertised["points_of_sale"])
    points_of_sale = 2 if points_of_sale is None else points_of_sale
    guidance = (pos_interval, seconds_per_payment, price)
    explanation = None
    if any(v is not None for v in guidance):
        if penalty is not None:
            raise click.UsageError("give either --penalty or the guidance options "
                                   "(--sync-interval, --mean-payment-interval, --price)")
        if any(v is None for v in guidance):
            raise click.UsageError("penalty guidance needs all of --sync-interval, "
                                   "--mean-payment-interval and --price")
        interval, per_payment = Fraction(str(pos_interval)), Fraction(str(seconds_per_payment))
        per_point, penalty = compute_penalty_guidance(interval, per_payment, price,
                                                      points_of_sale, max(deposit, 0))
        explanation = penalty_explanation(interval, per_payment, price, penalty,
                                          points_of_sale, per_point)
    penalty = penalty or 0
    if deposit <= 0:
        raise click.BadParameter("must be positive", param_hint="--deposit")
    payer_pub = wallet.key_address(payer)
    payee_pub = wallet.resolve_address(payee, "--payee")
    if payee_pub == payer_pub:
        raise click.BadParameter("the payee is the payer", param_hint="--payee")
    need = deposit + penalty + fee
    have = int(wallet.account(payer_pub)["balance"])
    if need > MAX_AMOUNT or need > have:
        raise WalletError(f"insufficient funds: {payer} has {format_amount(have)}; the channel "
                          f"needs {deposit} (deposit) + {penalty} (penalty) + {fee} (fee) "
                          f"units")
    params = wallet.params()
    expiry_height = wallet.height() + 1 + blocks
    if blocks > params.max_escrow_rounds:
        raise click.BadParameter(f"at most {params.max_escrow_rounds} on the {params.name} "
                                 "chain", param_hint="--blocks")
    seed = wallet.load_seed(payer)
    genesis = wallet.genesis_hash()
    tx = make_channel_open(seed, genesis, wallet.next_nonce(payer_pub), fee, payee_pub,
                           deposit, penalty, expiry_height)
    txid = tx.txid()
    channel_id = compute_channel_id(txid)
    book = ChannelBook(wallet.wallet_dir)
    book.add(ChannelRecord(channel_id=channel_id.hex(), txid=txid.hex(), payer_key=payer,
                           payer=payer_pub.hex(), payee=payee_pub.hex(),
                           genesis_hash=genesis.hex(), deposit=deposit, penalty=penalty,
                           expiry_height=expiry_height, fee=fee))
    try:
        wallet.submit(tx)
    except TxRejected:
        book.drop(channel_id.hex())
        raise
    status, height = "mempool", None
    if wait:
        height = int(wallet.wait_confirmed(txid.hex(), timeout)["height"])
        status = "confirmed"
    result = {"channel_id": channel_id.hex(), "txid": txid.hex(), "status": status,
              "height": height, "deposit": deposit, "penalty": penalty, "fee": fee,
              "expiry_height": expiry_height, "close_deadline": expiry_height - 1,
              "penalty_explanation": explanation}
    if as_json:
        echo_json(result)
        return
    click.echo(channel_id.hex())
    click.echo(f"channel of {format_amount(deposit)} (+ penalty {penalty} units) to {payee}, "
               f"{status}; open until height {expiry_height} (the payee must close by "
               f"{expiry_height - 1}); txid {txid.hex()}")
    if explanation:
        click.echo(explanation)


def _http(url: str, path: str, body: bytes | None, what: str) -> dict[str, Any]:
    """GET (``body`` None) or POST JSON to ``url + path``; the JSON answer. Raises
    WalletError (``what`` names the exchange in the message)."""
    from wallet.httpclient import HttpConnections

    try:
        connections = HttpConnections(url.rstrip("/") + path, SEND_TIMEOUT)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    try:
        if body is None:
            status, content = connections.request("GET")
        else:
            status, content = connections.post(body, {"Content-Type": "application/json"})
    except OSError as exc:
        raise WalletError(f"cannot {what} at {url}: {exc}") from None
    finally:
        connections.close()
    return payee_answer(status, content)


def _checked_receipt(record: ChannelRecord, reply: dict[str, Any]) -> dict | None:
    """The receipt of ``reply`` (JSON form) if it is the payee's for the record's voucher
    ``k``, else None (an older payee gives none; a wrong one is not kept)."""
    data = reply.get("receipt")
    if data is None:
        return None
    try:
        receipt = Receipt.from_json(data)
    except ReceiptError:
        return None
    if (receipt.channel_id.hex(), receipt.k, receipt.cumulative) != (
            record.channel_id, record.k, record.cumulative):
        return None
    if verify_receipt(bytes.fromhex(record.payee), bytes.fromhex(record.payer),
                      bytes.fromhex(record.genesis_hash), receipt) is not None:
        return None
    return receipt.to_json()


def _deliver(wallet: WalletContext, book: ChannelBook, record: ChannelRecord,
             url: str) -> dict[str, Any]:
    """Sign the record's voucher ``k`` (same bytes every time) and post it, with the
    latest receipt held (so a point of sale that has not heard of it learns the state)."""
    seed = wallet.load_seed(record.payer_key)
    channel_id = bytes.fromhex(record.channel_id)
    voucher = sign_voucher(seed, bytes.fromhex(record.genesis_hash), channel_id, record.k,
                           record.cumulative)
    reply = _http(url, VOUCHER_PATH, voucher_request(channel_id, voucher, record.receipt),
                  f"deliver voucher {record.k} (it is recorded; the next `channel pay` "
                  "sends it again first)")
    if reply.get("accepted") is True:
        receipt = _checked_receipt(record, reply)
        book.acknowledge(record.channel_id, record.k, url, receipt)
        reply["receipt_kept"] = receipt is not None
    else:
        raise WalletError(f"payee refused voucher {record.k} (cumulative "
                          f"{record.cumulative}): {reply.get('reason')}"
                          + (f" ({reply['detail']})" if reply.get("detail") else ""))
    return reply


@channel.command("pay")
@click.argument("payer")
@click.argument("channel_id", type=CHANNEL_ID)
@click.option("--amount", type=POSITIVE_UNITS, required=True, help="UNITS to pay now.")
@click.option("--to", "url", required=True, metavar="URL",
              help="The payee's service, e.g. http://127.0.0.1:8080 (POST /v1/vouchers).")
@cacert_option
@json_option
@pass_wallet
def channel_pay(wallet: WalletContext, payer: str, channel_id: str, amount: int, url: str,
                as_json: bool) -> None:
    """Pay --amount through channel CHANNEL_ID: voucher k+1 with the new cumulative.

    First reads the payee's state (GET /v1/channels/ID: its price, last voucher). Then
    (k+1, cumulative) is recorded durably before the voucher is signed, so no voucher
    number is ever signed for two totals. An earlier voucher the payee never
    acknowledged is sent again, unchanged, first. --to may be any point of sale of the
    payee: the latest receipt (signed by the point of sale that took the last voucher)
    goes with the voucher, so the point of sale knows the cumulative so far. Needs no
    node.
    """
    book = ChannelBook(wallet.wallet_dir)
    record = book.get(channel_id)
    if record is None:
        raise WalletError(f"no channel {channel_id} in {book.path} (opened elsewhere?)")
    if record.payer_key != payer:
        raise WalletError(f"channel {channel_id} is paid by key {record.payer_key!r}, "
                          f"not {payer!r}")
    resent = None
    info = _http(url, f"/v1/channels/{channel_id}", None, "read the payee's channel state")
    if record.k > record.acked_k:
        # not known to be acknowledged: the same voucher again (a duplicate where it
        # arrived, with a receipt either way)
        _deliver(wallet, book, record, url)
        resent = record.k
        info = {**info, "k": record.k, "cumulative": record.cumulative, "status": "open"}
        record = book.get(channel_id)
    held = record.receipt or {}
    known_here = info.get("k") == record.k or (
        isinstance(info.get("k"), int) and info["k"] < record.k
        and held.get("k") == record.k and held.get("cumulative") == record.cumulative)
    if info.get("unsynced"):
        raise WalletError(f"this point of sale is out of sync with the payee's others "
                          f"({info['unsynced']}); pay at another one: nothing signed")
    if info.get("status") not in ("new", "open") or not known_here:
        raise WalletError(f"payee's state of channel {channel_id} is {info}; this wallet's "
                          f"is voucher {record.k} = {record.cumulative} units"
                          + ("" if held else " (no receipt to show)") + ": nothing signed")
    price = info.get("price")
    if isinstance(price, int) and amount < price:
        raise WalletError(f"--amount {amount} is below the payee's price of {price} units "
                          "a payment; nothing signed")
    record = book.reserve_voucher(channel_id, amount)
    reply = _deliver(wallet, book, record, url)
    result = {"channel_id": channel_id, "k": record.k, "cumulative": record.cumulative,
              "amount": amount, "deposit": record.deposit, "resent_k": resent,
              "accepted": True, "duplicate": bool(reply.get("duplicate")),
              "receipt": book.get(channel_id).receipt if reply["receipt_kept"] else None}
    if as_json:
        echo_json(result)
        return
    if resent is not None:
        click.echo(f"voucher {resent} (unacknowledged before) delivered again")
    click.echo(f"voucher {record.k}: {record.cumulative} of {record.deposit} units paid "
               f"(+{amount}), accepted")


@channel.command("list")
@json_option
@pass_wallet
def channel_list(wallet: WalletContext, as_json: bool) -> None:
    """The channels this wallet opened: deposit, last voucher, acknowledged, expiry."""
    records = ChannelBook(wallet.wallet_dir).all()
    if as_json:
        echo_json({"channels": [r.to_json() for r in records]})
        return
    if not records:
        click.echo("no channels")
    for r in records:
        click.echo(f"{r.channel_id}: voucher {r.k} = {r.cumulative}/{r.deposit} units "
                   f"(acknowledged {r.acked_k}), penalty {r.penalty}, expiry {r.expiry_height}")
