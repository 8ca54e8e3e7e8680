"""``microcash-wallet``: keys, coins, escrows, tickets, payment channels, the merchant
service, cheat proofs.

The click group holding the global options; the commands live in ``wallet.commands``,
``wallet.customer`` and ``wallet.merchant`` and are imported only when named
(``COMMANDS``), so a command loads just what it uses and starts in about a tenth of a
second. Every failure a user can cause (a bad argument, an unreachable node, a wrong
passphrase, a transaction the node rejects) ends with one ``error: ...`` line and exit
status 1, never a traceback. A rejected transaction reads ``error: node rejected the
transaction: <reason>`` with the SPEC reject reason.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from wallet.commands.common import DEFAULT_WALLET_DIR, WalletContext, WalletError
from wallet.rpcclient import RpcConnectionError, RpcError

# name -> ("module:attribute", short help) of each top-level command, imported on first
# use; the short help (the first sentence of its docstring, checked by a test) lets
# ``--help`` list the commands without importing them.
COMMANDS = {
    "address": ("wallet.commands.keys:address",
                "Print the address of the wallet key NAME (bech32m, or hex with --hex)."),
    "balance": ("wallet.commands.coins:balance",
                "Show the confirmed balance (MCASH and units) and account nonce of a key or "
                "address."),
    "channel": ("wallet.customer.channel:channel",
                "Open payment channels and pay through them with vouchers (SPEC §16)."),
    "cheat": ("wallet.commands.cheat:cheat",
              "Report a customer who issued duplicate or out-of-range tickets."),
    "escrow": ("wallet.customer.escrow:escrow",
               "Create escrows and follow their draws, redeems and refund."),
    "key": ("wallet.commands.keys:key",
            "Create, import and list the wallet's named keys (NAME: 1-64 of A-Z a-z 0-9 _ -)."),
    "merchant": ("wallet.merchant.commands:merchant",
                 "Run a merchant's ticket and voucher service, redeemer and closer; inspect "
                 "them."),
    "micropay": ("wallet.customer.micropay:micropay",
                 "Pay with MICROPAY lottery tickets: fund MP escrows and pay merchants "
                 "(SPEC §15)."),
    "send": ("wallet.commands.coins:send",
             "Send AMOUNT from the wallet key FROM to TO (a key name or an address)."),
    "ticket": ("wallet.customer.tickets:ticket",
               "Issue lottery tickets to merchants (customer side)."),
}

# Failures whose message is already the user's error line: (module, exception class).
_MESSAGE_ERRORS = (("wallet.keystore", "KeystoreError"), ("wallet.walletdb", "WalletDBError"),
                   ("wallet.customer.issuer", "IssueError"),
                   ("wallet.customer.issuer", "TicketSendError"),
                   ("wallet.merchant.ticketstore", "StoreError"))


def _message_errors() -> tuple[type[BaseException], ...]:
    """The ``_MESSAGE_ERRORS`` classes of the modules loaded so far (an exception of a
    class whose module was never imported cannot have been raised)."""
    return tuple(getattr(sys.modules[module], name) for module, name in _MESSAGE_ERRORS
                 if module in sys.modules)


class WalletGroup(click.Group):
    """A click group that loads ``COMMANDS`` lazily and turns the wallet's exceptions
    into ``error: ...`` lines."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The "Commands" section of ``--help``, from ``COMMANDS`` (nothing imported)."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=short).get_short_help_str(limit))
                for name, (_, short) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RpcConnectionError as exc:
            raise WalletError(f"cannot reach the node: {exc}") from None
        except RpcError as exc:
            detail = f" ({exc.data})" if exc.data else ""
            raise WalletError(f"node answered with an error: {exc.message}{detail}") from None
        except Exception as exc:
            if isinstance(exc, _message_errors()):
                raise WalletError(str(exc)) from None
            raise


@click.group(cls=WalletGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--wallet-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="MICROCASH_WALLET_DIR", default=str(DEFAULT_WALLET_DIR),
              show_default="$MICROCASH_WALLET_DIR or ~/.microcash/wallet",
              help="Where keys (keys/), the wallet's records (wallet.json), the ticket "
                   "issuer's state (issuer/), the payer's channels (channels.json), MP "
                   "escrows (micropay.json) and merchant stores (merchants/NAME/) live.")
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


if __name__ == "__main__":
    cli()
