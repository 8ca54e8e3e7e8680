"""Key commands: ``key new``, ``key import``, ``key list`` and ``address`` (SPEC §0).

Keys are Ed25519 seeds kept encrypted by ``wallet.keystore``; an address is the public key,
shown in bech32m (``mc1...``). None of these commands needs a node.
"""

from __future__ import annotations

import sys

import click

from wallet.commands.common import (WalletContext, WalletError, address_text, echo_json,
                                    json_option, pass_wallet)
from wallet.keystore import SEED_SIZE

_EMPTY_HELP = ("Store the key without a passphrase (devnets and tests only); commands "
               "using it never prompt.")


@click.group()
def key() -> None:
    """Create, import and list the wallet's named keys (NAME: 1-64 of A-Z a-z 0-9 _ -)."""


def _new_passphrase(wallet: WalletContext, name: str, empty: bool) -> str:
    if empty:
        return ""
    passphrase = wallet.passphrase(name, confirm=True)
    if passphrase == "":
        raise WalletError("empty passphrase refused: choose one, or pass --empty-passphrase "
                          "for a throw-away devnet key")
    return passphrase


@key.command("new")
@click.argument("name")
@click.option("--empty-passphrase", is_flag=True, help=_EMPTY_HELP)
@pass_wallet
def key_new(wallet: WalletContext, name: str, empty_passphrase: bool) -> None:
    """Create a fresh random key NAME and print its address (bech32m mc1...)."""
    if wallet.keystore.has(name):
        raise WalletError(f"key {name!r} already exists in {wallet.keystore.keys_dir}")
    passphrase = _new_passphrase(wallet, name, empty_passphrase)
    pubkey = wallet.keystore.create(name, passphrase, allow_empty=empty_passphrase)
    click.echo(address_text(pubkey))


def _parse_seed(text: str) -> bytes:
    if text == "-":
        text = sys.stdin.readline()
    text = text.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != SEED_SIZE:
        raise click.BadParameter(f"a seed is {SEED_SIZE} bytes: exactly {2 * SEED_SIZE} hex "
                                 "digits", param_hint="--seed-hex")
    return seed


@key.command("import")
@click.argument("name")
@click.option("--seed-hex", required=True, metavar="HEX",
              help="The 32-byte Ed25519 seed as 64 hex digits; '-' reads it from stdin "
                   "(keeps it out of the shell history).")
@click.option("--empty-passphrase", is_flag=True, help=_EMPTY_HELP)
@pass_wallet
def key_import(wallet: WalletContext, name: str, seed_hex: str, empty_passphrase: bool) -> None:
    """Store an existing seed as key NAME and print its address."""
    seed = _parse_seed(seed_hex)
    if wallet.keystore.has(name):
        raise WalletError(f"key {name!r} already exists in {wallet.keystore.keys_dir}")
    passphrase = _new_passphrase(wallet, name, empty_passphrase)
    pubkey = wallet.keystore.create(name, passphrase, seed=seed, allow_empty=empty_passphrase)
    click.echo(address_text(pubkey))


@key.command("list")
@json_option
@pass_wallet
def key_list(wallet: WalletContext, as_json: bool) -> None:
    """List the wallet's keys: name and address."""
    keys = wallet.keystore.list()
    if as_json:
        echo_json([{"name": name, "address": address_text(pub), "hex": pub.hex()}
                   for name, pub in keys])
        return
    if not keys:
        click.echo(f"no keys in {wallet.keystore.keys_dir} (create one with `key new NAME`)")
        return
    width = max(len(name) for name, _ in keys)
    for name, pub in keys:
        click.echo(f"{name:<{width}}  {address_text(pub)}")


@click.command()
@click.argument("name")
@click.option("--hex", "as_hex", is_flag=True, help="Print 64 hex digits instead of bech32m.")
@pass_wallet
def address(wallet: WalletContext, name: str, as_hex: bool) -> None:
    """Print the address of the wallet key NAME (bech32m, or hex with --hex)."""
    pubkey = wallet.key_address(name)
    click.echo(pubkey.hex() if as_hex else address_text(pubkey))
