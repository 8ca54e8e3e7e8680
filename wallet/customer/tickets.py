"""Ticket commands: ``ticket issue`` and ``ticket send`` (SPEC §3.2, §4, §13).

Issuing goes through ``wallet.customer.issuer.TicketIssuer`` with its state in
``<wallet-dir>/issuer``: the seqno high-water mark is on disk (fsynced) before any
ticket is signed, so a seqno is never handed out twice, even across crashes. Seqnos are
reserved chunk by chunk (``--chunk``): the next chunk is reserved and signed while the
previous ones (at most two) are being delivered. Each reserved chunk is a pending
delivery until its merchant answers; a killed ``ticket issue`` leaves at most three, and
the next ``ticket issue`` of that escrow delivers them first (re-signed to the identical
tickets), so the crash loses no ticket while the round is current, and the rest of the
round stays issuable.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from consensus.address import encode_address
from consensus.escrow import EscrowState
from consensus.ticket import Ticket
from wallet.commands.common import (ESCROW_ID, WalletContext, WalletError, echo_json,
                                    json_option, pass_wallet)
from consensus.escrow import compute_seqno_range
from wallet.customer.follow import DEFAULT_LEAD, Escrow, Follower
from wallet.customer.issuer import (DELIVERY_CHUNK, MAX_TICKETS_PER_REQUEST, TicketIssuer,
                                    TicketSender, TicketSendError, read_tickets, send_tickets,
                                    write_tickets)
from wallet.tlsconfig import cacert_option


@click.group()
def ticket() -> None:
    """Issue lottery tickets to merchants (customer side)."""


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL of a merchant service, "
                                 "e.g. http://127.0.0.1:8500", param_hint="--to")
    return url


def _summary(reply: dict[str, Any]) -> dict[str, Any]:
    reasons = Counter(r["reason"] for r in reply["rejected"])
    return {"accepted": reply["accepted"], "rejected": reply["rejected"],
            "rejected_reasons": dict(reasons)}


def _summary_text(summary: dict[str, Any]) -> str:
    text = f"merchant accepted {summary['accepted']}"
    if summary["rejected"]:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(summary["rejected_reasons"].items()))
        text += f", rejected {len(summary['rejected'])} ({reasons})"
        detail = next((r["detail"] for r in summary["rejected"] if "detail" in r), None)
        if detail is not None:
            text += f": {detail}"
    return text


def _keep_undelivered(wallet: WalletContext, tickets: list[Ticket], eid: str,
                      exc: TicketSendError | None) -> WalletError:
    """Save tickets a merchant did not acknowledge in ``<wallet-dir>/undelivered/``."""
    keep = wallet.wallet_dir / "undelivered"
    keep.mkdir(parents=True, exist_ok=True)
    path = keep / f"{eid}-{tickets[0].seqno}-{tickets[-1].seqno}.tkt"
    write_tickets(path, tickets)
    why = f"{exc}\n" if exc is not None else ""
    return WalletError(f"{why}the {len(tickets)} tickets were issued and saved in {path}; "
                       f"retry with `ticket send {path} --to URL` while their round is "
                       "current")


DELIVERIES_IN_FLIGHT = 2  # requests to the merchant at once: its checks never wait for us


def _issue_and_deliver(wallet: WalletContext, issuer: TicketIssuer, chunks, url: str, eid: str
                       ) -> tuple[list[Ticket], dict[str, Any]]:
    """Deliver chunks while the next one is reserved and signed, with up to
    ``DELIVERIES_IN_FLIGHT`` requests outstanding; all tickets and the merged SPEC §13
    answer. Each answered chunk's pending delivery is forgotten. When a delivery fails
    no further chunk is reserved, and the tickets from the failed chunk on are kept
    (``_keep_undelivered``; a merchant that did take some of them answers a retry with
    duplicate-ticket)."""
    escrow_id = bytes.fromhex(eid)
    issued: list[Ticket] = []
    firsts: list[int] = []  # first seqno of every chunk reserved
    in_flight: deque[tuple[int, int, Future]] = deque()  # (offset, count, answer)
    with TicketSender(url) as sender, ThreadPoolExecutor(DELIVERIES_IN_FLIGHT) as pool:
        def settle() -> None:
            offset, count, answer = in_flight.popleft()
            sender.merge(answer.result(), offset, count)
            issuer.delivered(escrow_id, issued[offset].seqno)

        offset = 0
        try:
            for chunk in chunks:
                in_flight.append((len(issued), len(chunk), pool.submit(sender.post, chunk)))
                firsts.append(chunk[0].seqno)
                issued += chunk
                if len(in_flight) == DELIVERIES_IN_FLIGHT:
                    offset = in_flight[0][0]
                    settle()
            while in_flight:
                offset = in_flight[0][0]
                settle()
        except TicketSendError as exc:
            error = _keep_undelivered(wallet, issued[offset:], eid, exc)
            for first in firsts:
                if first >= issued[offset].seqno:
                    issuer.delivered(escrow_id, first)  # now kept in the file
            raise error from None
        return issued, _summary(sender.total)


def _deliver_pending(wallet: WalletContext, issuer: TicketIssuer, seed: bytes, genesis: bytes,
                     escrow: EscrowState, eid: str, current_round: int) -> dict[str, Any] | None:
    """Deliver the chunks an interrupted ``ticket issue`` of this escrow reserved but never
    saw answered: re-signed (identical tickets) and sent to their merchant while their
    round is current; kept in ``undelivered/`` when they cannot be sent; dropped with a
    warning once their round has passed (merchants would refuse them, SPEC §4.1).
    Returns a summary for the output, or None when nothing was pending."""
    pending = issuer.pending(bytes.fromhex(eid))
    if not pending:
        return None
    lo, hi = compute_seqno_range(escrow, current_round)
    summary: dict[str, Any] = {"tickets": 0, "accepted": 0, "rejected": 0, "expired": 0,
                               "kept": []}
    for item in pending:
        count = item.last - item.first
        if not (lo <= item.first and item.last <= hi):
            summary["expired"] += count
            click.echo(f"warning: {count} ticket(s), seqnos {item.first}-{item.last - 1}, were "
                       "reserved by an interrupted `ticket issue` and never acknowledged; "
                       "their round has passed", err=True)
            issuer.delivered(item.escrow_id, item.first)
            continue
        tickets = issuer.resign(seed, genesis, item)
        summary["tickets"] += count
        if not item.url:
            summary["kept"].append(str(_keep_undelivered(wallet, tickets, eid, None)))
        else:
            try:
                reply = send_tickets(item.url, tickets)
                summary["accepted"] += reply["accepted"]
                summary["rejected"] += len(reply["rejected"])
            except TicketSendError as exc:
                summary["kept"].append(str(_keep_undelivered(wallet, tickets, eid, exc)))
        issuer.delivered(item.escrow_id, item.first)
    return summary


@ticket.command("issue")
@click.argument("sender", metavar="FROM")
@click.argument("escrow_id", type=ESCROW_ID)
@click.option("--merchant", metavar="NAME|ADDRESS",
              help="The merchant to pay (its position in the escrow gives merchant_index).")
@click.option("--merchant-index", type=click.IntRange(0, 2**16 - 1),
              help="The merchant's index in the escrow's merchant list instead.")
@click.option("--count", type=click.IntRange(min=1), required=True,
              help="Tickets wanted; fewer are issued if the round has fewer left.")
@click.option("--to", "url", metavar="URL",
              help="Merchant service base URL; tickets are POSTed to URL/v1/tickets.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the tickets to this new file instead (107 bytes each).")
@click.option("--chunk", type=click.IntRange(1, MAX_TICKETS_PER_REQUEST),
              default=DELIVERY_CHUNK, show_default=True,
              help="Tickets reserved, signed and sent at a time. A crash leaves at most three "
                   "chunks unacknowledged; the next `ticket issue` of the escrow delivers them.")
@cacert_option
@click.option("--follow", is_flag=True,
              help="Keep issuing COUNT tickets in every round, across escrows: the next "
                   "escrow (same parameters and merchants) is created early enough that "
                   "issuing never pauses when one ends. Prints one line per batch, naming "
                   "its escrow. Needs --to.")
@click.option("--until-round", type=click.IntRange(min=1), default=None,
              help="With --follow: stop after this round (default: run until Ctrl-C).")
@click.option("--lead-blocks", type=click.IntRange(0, 100), default=DEFAULT_LEAD,
              show_default=True,
              help="With --follow: blocks the next ESCROW_CREATE may be mined late without "
                   "a pause (it is sent that much earlier).")
@json_option
@pass_wallet
def ticket_issue(wallet: WalletContext, sender: str, escrow_id: str, merchant: str | None,
                 merchant_index: int | None, count: int, url: str | None, out: Path | None,
                 chunk: int, follow: bool, until_round: int | None, lead_blocks: int,
                 as_json: bool) -> None:
    """Issue COUNT tickets of ESCROW_ID, owned by the wallet key FROM, to one merchant.

    The seqnos come from the current round (node height + 1): round r carries seqnos
    [(r - start) x tkt_rate, (r - start + 1) x tkt_rate), and the issuer continues after
    the last one handed out. Prints the seqno range and the merchant's accept/reject
    summary (SPEC §13), or the file written. Chunks a killed earlier `ticket issue` of
    this escrow left unacknowledged are delivered first (the same tickets, re-signed).

    With --follow, issues COUNT tickets in each new round until --until-round (or
    Ctrl-C), rolling over to new escrows (DESIGN "Replace-by-fee and escrow roll-over").
    """
    if (merchant is None) == (merchant_index is None):
        raise click.UsageError("give exactly one of --merchant or --merchant-index")
    if (url is None) == (out is None):
        raise click.UsageError("give exactly one of --to URL or --out FILE")
    if follow and url is None:
        raise click.UsageError("--follow sends each round's tickets: give --to URL")
    if not follow and until_round is not None:
        raise click.UsageError("--until-round needs --follow")
    if url is not None:
        _check_url(url)
    if out is not None:
        if out.exists():
            raise click.BadParameter(f"{out} exists; choose a new file", param_hint="--out")
        if not out.parent.is_dir():
            raise click.BadParameter(f"directory {out.parent} does not exist", param_hint="--out")
    found = wallet.call("getescrow", escrow_id)
    if found is None:
        raise WalletError(f"escrow {escrow_id} is unknown to the node (not mined yet, or "
                          "already refunded)")
    escrow = EscrowState.from_rpc(found)
    if merchant is not None:
        pubkey = wallet.resolve_address(merchant, "--merchant")
        if pubkey not in escrow.merchants:
            raise click.BadParameter(f"{encode_address(pubkey)} is not a merchant of this "
                                     "escrow", param_hint="--merchant")
        merchant_index = escrow.merchants.index(pubkey)
    elif merchant_index >= len(escrow.merchants):
        raise click.BadParameter(f"the escrow has {len(escrow.merchants)} merchants "
                                 f"(indexes 0-{len(escrow.merchants) - 1})",
                                 param_hint="--merchant-index")
    if escrow.owner != wallet.key_address(sender):
        raise WalletError(f"key {sender!r} does not own escrow {escrow_id}; its tickets "
                          "would not verify")
    if follow:
        _follow(wallet, sender, escrow_id, escrow, merchant_index, count, url, chunk,
                until_round, lead_blocks, as_json)
        return
    seed = wallet.load_seed(sender)
    genesis = wallet.genesis_hash()
    current_round = wallet.height() + 1
    delivery: dict[str, Any] = {}
    with TicketIssuer(wallet.wallet_dir / "issuer") as issuer:
        resent = _deliver_pending(wallet, issuer, seed, genesis, escrow, escrow_id,
                                  current_round)
        chunks = issuer.issue_chunks(seed, genesis, escrow, bytes.fromhex(escrow_id),
                                     merchant_index, count, current_round, chunk,
                                     url="" if url is None else url)
        if url is not None:
            tickets, delivery = _issue_and_deliver(wallet, issuer, chunks, url, escrow_id)
        else:
            tickets = [t for part in chunks for t in part]
            write_tickets(out, tickets)
            for first in range(tickets[0].seqno, tickets[-1].seqno + 1, chunk):
                issuer.delivered(bytes.fromhex(escrow_id), first)
    result: dict[str, Any] = {
        "escrow_id": escrow_id, "merchant_index": merchant_index,
        "merchant": encode_address(escrow.merchants[merchant_index]), "round": current_round,
        "requested": count, "count": len(tickets), "seqno_first": tickets[0].seqno,
        "seqno_last": tickets[-1].seqno}
    if resent is not None:
        result["resent"] = resent
    if out is not None:
        result["out"] = str(out)
    else:
        result["to"] = url
        result.update(delivery)
    if as_json:
        echo_json(result)
        return
    if resent is not None and resent["tickets"]:
        click.echo(f"delivered {resent['tickets']} ticket(s) left unacknowledged by an "
                   f"interrupted issue: merchant accepted {resent['accepted']}, rejected "
                   f"{resent['rejected']} (already held)")
        for kept in resent["kept"]:
            click.echo(kept)
    click.echo(f"issued {len(tickets)} ticket(s) (of {count} asked), seqnos "
               f"{tickets[0].seqno}-{tickets[-1].seqno} of round {current_round}, to "
               f"merchant {merchant_index} ({result['merchant']})")
    click.echo(f"written to {out}" if out is not None else _summary_text(result))


def _follow(wallet: WalletContext, sender: str, escrow_id: str, escrow: EscrowState,
            merchant_index: int, count: int, url: str, chunk: int, until_round: int | None,
            lead: int, as_json: bool) -> None:
    """``ticket issue --follow``: run a ``Follower``, one output line per event."""
    def emit(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event, sort_keys=True))  # one JSON object per line
        else:
            click.echo(_event_text(event))

    record = wallet.db.escrow(escrow_id)
    penalty = None if record is None else record.penalty_amount
    with TicketIssuer(wallet.wallet_dir / "issuer") as issuer:
        resent = _deliver_pending(wallet, issuer, wallet.load_seed(sender),
                                  wallet.genesis_hash(), escrow, escrow_id, wallet.height() + 1)
        if resent is not None:
            emit({"event": "resent", "escrow_id": escrow_id, **resent})

        def deliver(chunks, eid: str):
            return _issue_and_deliver(wallet, issuer, chunks, url, eid)

        follower = Follower(wallet, issuer, sender, Escrow(escrow_id, escrow), merchant_index,
                            count, chunk, deliver=deliver, emit=emit, until_round=until_round,
                            lead=lead, penalty=penalty, url=url)
        report = follower.run()
    emit(report.to_json())


def _event_text(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "batch":
        text = (f"round {event['round']}: {event['count']} ticket(s) of escrow "
                f"{event['escrow_id']} (seqnos {event['seqno_first']}-{event['seqno_last']}), "
                f"merchant accepted {event['accepted']}")
        return text + (f", rejected {event['rejected']}" if event["rejected"] else "")
    if kind == "escrow-sent":
        return (f"next escrow sent at height {event['height']}: txid {event['txid']} "
                f"({event['escrow_amount']} + penalty {event['penalty_amount']} units)")
    if kind == "escrow-confirmed":
        return (f"next escrow {event['escrow_id']}: rounds {event['start']}-"
                f"{event['last_round']}, refund at {event['t_refund']}")
    if kind == "gap":
        return f"round {event['round']}: no escrow issuing (paused)"
    if kind == "skipped":
        return f"round {event['round']}: nothing issued ({event['reason']})"
    if kind == "resent":
        return (f"delivered {event['tickets']} ticket(s) left unacknowledged by an interrupted "
                f"issue: merchant accepted {event['accepted']}, rejected {event['rejected']}")
    rows = [f"  {e['escrow_id']}: rounds {e['start']}-{e['last_round']}, {e['tickets']} "
            f"ticket(s) in {e['batches']} round(s)" for e in event["escrows"]]
    return "\n".join([f"followed {event['rounds']} round(s), {event['tickets']} ticket(s), "
                      f"{len(event['gaps'])} round(s) without an escrow"] + rows)


@ticket.command("send")
@click.argument("path", metavar="TICKET_FILE",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "url", metavar="URL", required=True,
              help="Merchant service base URL; tickets are POSTed to URL/v1/tickets.")
@cacert_option
@json_option
def ticket_send(path: Path, url: str, as_json: bool) -> None:
    """POST the tickets of TICKET_FILE (concatenated 107-byte tickets) to a merchant.

    For tickets written with `ticket issue --out` or kept after a failed delivery; the
    merchant accepts them only while their round is current (SPEC §4.1).
    """
    _check_url(url)
    try:
        tickets = read_tickets(path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="TICKET_FILE") from None
    if not tickets:
        raise click.BadParameter(f"{path} holds no tickets", param_hint="TICKET_FILE")
    summary = _summary(send_tickets(url, tickets))
    if as_json:
        echo_json({"to": url, "count": len(tickets), **summary})
    else:
        click.echo(f"sent {len(tickets)} ticket(s): {_summary_text(summary)}")
