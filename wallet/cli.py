"""``microcash-wallet``: keys, coins, escrows, tickets, the merchant service, cheat proofs.

The click group holding the global options; the commands live in ``wallet.commands``.
Every failure a user can cause (a bad argument, an unreachable node, a wrong passphrase,
a transaction the node rejects) ends with one ``error: ...`` line and exit status 1, never
a traceback. A rejected transaction reads ``error: node rejected the transaction: <reason>``
with the SPEC reject reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from wallet.commands.cheat import cheat
from wallet.commands.coins import balance, send
from wallet.commands.common import DEFAULT_WALLET_DIR, WalletContext, WalletError
from wallet.commands.escrow import escrow
from wallet.commands.keys import address, key
from wallet.commands.merchant import merchant
from wallet.commands.tickets import ticket
from wallet.issuer import IssueError, TicketSendError
from wallet.keystore import KeystoreError
from wallet.rpcclient import RpcConnectionError, RpcError
from wallet.ticketstore import StoreError
from wallet.walletdb import WalletDBError


class WalletGroup(click.Group):
    """A click group that turns the wallet's exceptions into ``error: ...`` lines."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RpcConnectionError as exc:
            raise WalletError(f"cannot reach the node: {exc}") from None
        except RpcError as exc:
            detail = f" ({exc.data})" if exc.data else ""
            raise WalletError(f"node answered with an error: {exc.message}{detail}") from None
        except (KeystoreError, WalletDBError, IssueError, TicketSendError, StoreError) as exc:
            raise WalletError(str(exc)) from None


@click.group(cls=WalletGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--wallet-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="MICROCASH_WALLET_DIR", default=str(DEFAULT_WALLET_DIR),
              show_default="$MICROCASH_WALLET_DIR or ~/.microcash/wallet",
              help="Where keys (keys/), the wallet's records (wallet.json), the ticket "
                   "issuer's state (issuer/) and merchant stores (merchants/NAME/) live.")
@click.option("--datadir", type=click.Path(file_okay=False, path_type=Path),
              envvar="MICROCASH_DATADIR", show_envvar=True,
              help="Data directory of the node to use: its RPC port comes from "
                   "ports.json and the credentials from .cookie.")
@click.option("--rpc-url", metavar="URL",
              help="Node JSON-RPC URL, e.g. http://127.0.0.1:18443/ (instead of --datadir).")
@click.option("--rpc-cookie", type=click.Path(dir_okay=False, path_type=Path),
              help="The node's .cookie file (with --rpc-url).")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the key passphrase (one line). Else $MICROCASH_PASSPHRASE, "
                   "else a hidden prompt. Keys made with --empty-passphrase never ask.")
@click.pass_context
def cli(ctx: click.Context, wallet_dir: Path, datadir: Path | None, rpc_url: str | None,
        rpc_cookie: Path | None, passphrase_file: Path | None) -> None:
    """MicroCash wallet: keys, payments, escrows, lottery tickets and the merchant service.

    Amounts: a plain number is MCASH (1.5, at most 8 decimals); a number with the suffix
    'u' is base units (150000000u). 1 MCASH = 100 000 000 units. Options marked UNITS
    (--fee, --beta, --penalty) take whole units.

    Heights are rounds: with the node's best block at height t, the current round is t+1.
    """
    if rpc_url is not None and datadir is not None and ctx.get_parameter_source(
            "datadir") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give either --datadir or --rpc-url, not both")
    if rpc_url is not None:
        datadir = None
        if not rpc_url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{rpc_url!r} is not an http(s) URL",
                                     param_hint="--rpc-url")
    elif rpc_cookie is not None:
        raise click.UsageError("--rpc-cookie goes with --rpc-url")
    ctx.obj = WalletContext(wallet_dir=Path(os.path.expanduser(wallet_dir)), datadir=datadir,
                            rpc_url=rpc_url, rpc_cookie=rpc_cookie,
                            passphrase_file=passphrase_file)


for command in (key, address, balance, send, escrow, ticket, merchant, cheat):
    cli.add_command(command)


if __name__ == "__main__":
    cli()
