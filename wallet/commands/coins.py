"""Coin commands: ``balance`` and ``send`` (a TRANSFER, SPEC §2)."""

from __future__ import annotations

import click

from wallet.amounts import format_amount
from wallet.commands.common import (AMOUNT, DEFAULT_TX_FEE, UNITS, WalletContext, WalletError,
                                    address_text, echo_json, json_option, pass_wallet,
                                    timeout_option)


@click.command()
@click.argument("who", metavar="NAME|ADDRESS")
@json_option
@pass_wallet
def balance(wallet: WalletContext, who: str, as_json: bool) -> None:
    """Show the confirmed balance (MCASH and units) and account nonce of a key or address.

    Reads the node's tip state: transactions still in the mempool are not counted.
    """
    pubkey = wallet.resolve_address(who, "NAME|ADDRESS")
    account = wallet.account(pubkey)
    units, nonce = int(account["balance"]), int(account["nonce"])
    if as_json:
        echo_json({"address": address_text(pubkey), "hex": pubkey.hex(), "balance": units,
                   "nonce": nonce, "height": int(wallet.info()["height"])})
        return
    click.echo(f"address: {address_text(pubkey)}")
    click.echo(f"balance: {format_amount(units)}")
    click.echo(f"nonce:   {nonce}")


@click.command()
@click.argument("sender", metavar="FROM")
@click.argument("to", metavar="TO")
@click.argument("amount", type=AMOUNT)
@click.option("--fee", type=UNITS, default=DEFAULT_TX_FEE, show_default=True,
              help="Fee in UNITS paid to the miner.")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Wait until the transfer is in a block.")
@timeout_option
@json_option
@pass_wallet
def send(wallet: WalletContext, sender: str, to: str, amount: int, fee: int, wait: bool,
         timeout: float, as_json: bool) -> None:
    """Send AMOUNT from the wallet key FROM to TO (a key name or an address).

    AMOUNT is MCASH (1.5, up to 8 decimals) or units with a 'u' suffix (150000000u).
    The nonce is the node's account nonce plus this wallet's own sends still waiting in
    the mempool, so several sends in a row need no waiting. Prints the txid.
    """
    if amount <= 0:
        raise click.BadParameter("must be more than 0", param_hint="AMOUNT")
    recipient = wallet.resolve_address(to, "TO")
    pubkey = wallet.key_address(sender)
    have = int(wallet.account(pubkey)["balance"])
    if amount + fee > have:
        raise WalletError(f"insufficient funds: {sender} has {format_amount(have)}, the "
                          f"transfer needs {format_amount(amount + fee)} (amount + fee)")
    from consensus.tx import make_transfer  # signing: only this command needs it

    seed = wallet.load_seed(sender)
    tx = make_transfer(seed, wallet.genesis_hash(), wallet.next_nonce(pubkey), fee, recipient,
                       amount)
    txid = wallet.submit(tx)
    result = {"txid": txid, "from": address_text(pubkey), "to": address_text(recipient),
              "amount": amount, "fee": fee, "nonce": tx.nonce, "status": "mempool"}
    if wait:
        found = wallet.wait_confirmed(txid, timeout)
        result.update(status="confirmed", height=found.get("height"),
                      block_hash=found.get("block_hash"))
    if as_json:
        echo_json(result)
        return
    click.echo(txid)
    click.echo(f"sent {format_amount(amount)} to {address_text(recipient)}, fee {fee} units, "
               f"nonce {tx.nonce}"
               + (f"; mined at height {result['height']}" if wait else "; in the mempool"))
