"""``cheat report``: submit a CHEAT_PROOF that breaks a cheating customer's escrow (SPEC §8).

Evidence is either two tickets with the same escrow and seqno for different merchant
indexes (a duplicate), or one ticket whose seqno is at or above the escrow's ``N``.
The proof burns the escrow's whole ``penalty_balance`` and marks it broken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from consensus.escrow import EscrowState
from consensus.ticket import Ticket, verify_ticket_signature
from consensus.tx import make_cheat_proof
from wallet.commands.common import (UNITS, WalletContext, WalletError, echo_json, json_option,
                                    pass_wallet, timeout_option)
from wallet.customer.issuer import read_tickets


@click.group()
def cheat() -> None:
    """Report a customer who issued duplicate or out-of-range tickets."""


def find_proof(tickets: list[Ticket], escrows: dict[bytes, EscrowState],
               genesis_hash: bytes) -> tuple[Ticket, Ticket | None] | None:
    """The first valid SPEC §8 proof among ``tickets``, or None.

    Prefers a duplicate pair (same escrow and seqno, different merchant_index), then a
    single ticket with ``seqno >= N``. Only tickets whose escrow is in ``escrows`` and
    whose owner signature verifies count.
    """
    valid = [t for t in tickets if t.escrow_id in escrows
             and verify_ticket_signature(t, escrows[t.escrow_id].owner, genesis_hash)]
    first_seen: dict[tuple[bytes, int], Ticket] = {}
    for t in valid:
        other = first_seen.setdefault(t.key, t)
        if other.merchant_index != t.merchant_index:
            return other, t
    for t in valid:
        if t.seqno >= escrows[t.escrow_id].N:
            return t, None
    return None


@cheat.command("report")
@click.argument("sender", metavar="FROM")
@click.argument("files", metavar="TICKET_FILE [TICKET_FILE2]", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fee", type=UNITS, default=0, show_default=True,
              help="Fee in UNITS the wallet key FROM pays the miner.")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Wait until the proof is mined and show the burned amount.")
@timeout_option
@json_option
@pass_wallet
def cheat_report(wallet: WalletContext, sender: str, files: tuple[Path, ...], fee: int,
                 wait: bool, timeout: float, as_json: bool) -> None:
    """Prove cheating with the tickets in TICKET_FILE(s), signed by the wallet key FROM.

    The files hold concatenated 107-byte tickets: two duplicate tickets (in one file or
    one per file) or one ticket with seqno >= N. Anyone may report. Prints the penalty
    burned: the node's burned total and the escrow's penalty before and after (--wait).
    """
    if len(files) > 2:
        raise click.UsageError("give one or two ticket files")
    tickets: list[Ticket] = []
    for path in files:
        try:
            tickets += read_tickets(path)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="TICKET_FILE") from None
    if not tickets:
        raise click.BadParameter("the files hold no tickets", param_hint="TICKET_FILE")
    escrows: dict[bytes, EscrowState] = {}
    for eid in {t.escrow_id for t in tickets}:
        found = wallet.call("getescrow", eid.hex())
        if found is not None:
            escrows[eid] = EscrowState.from_rpc(found)
    if not escrows:
        raise WalletError("the tickets' escrow is unknown to the node (refunded, or never "
                          "mined): there is nothing left to burn")
    genesis = wallet.genesis_hash()
    proof = find_proof(tickets, escrows, genesis)
    if proof is None:
        raise WalletError("no proof of cheating in these tickets: need two validly signed "
                          "tickets with the same escrow and seqno for different merchants, "
                          "or one with seqno >= N")
    ticket_a, ticket_b = proof
    eid = ticket_a.escrow_id.hex()
    before = escrows[ticket_a.escrow_id]
    burned_before = int(wallet.info(refresh=True)["burned"])
    reporter = wallet.key_address(sender)
    have = int(wallet.account(reporter)["balance"])
    if fee > have:
        raise WalletError(f"insufficient funds: {sender} has {have} units, the fee is {fee}")
    seed = wallet.load_seed(sender)
    tx = make_cheat_proof(seed, genesis, fee, ticket_a, ticket_b)
    txid = wallet.submit(tx)
    result: dict[str, Any] = {
        "txid": txid, "escrow_id": eid, "kind": "out-of-range" if ticket_b is None else
        "duplicate", "seqno": ticket_a.seqno, "fee": fee, "status": "mempool",
        "penalty_before": before.penalty_balance, "burned_before": burned_before}
    if wait:
        found = wallet.wait_confirmed(txid, timeout)
        after = wallet.call("getescrow", eid)
        burned_after = int(wallet.info(refresh=True)["burned"])
        result.update(status="confirmed", height=found["height"], burned_after=burned_after,
                      penalty_after=None if after is None else after["penalty_balance"],
                      broken=None if after is None else after["broken"],
                      burned=burned_after - burned_before)
    if as_json:
        echo_json(result)
        return
    what = (f"seqno {ticket_a.seqno} issued to merchants {ticket_a.merchant_index} and "
            f"{ticket_b.merchant_index}" if ticket_b is not None else
            f"seqno {ticket_a.seqno} >= N = {before.N}")
    click.echo(txid)
    click.echo(f"cheat proof for escrow {eid}: {what}")
    if not wait:
        click.echo(f"once mined it burns the penalty of {before.penalty_balance} units")
        return
    click.echo(f"mined at height {result['height']}; escrow penalty {before.penalty_balance} "
               f"-> {result['penalty_after']} units, broken: {result['broken']}")
    click.echo(f"chain burned total {burned_before} -> {burned_after} units "
               f"(+{result['burned']})")
