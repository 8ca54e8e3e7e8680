"""What every wallet command shares: the context, errors, argument types, RPC helpers.

``WalletContext`` is the click context object built by the ``microcash-wallet`` group from
its global options; commands get it with ``@pass_wallet``. It opens the key store, the
wallet's records and the node's JSON-RPC (SPEC §12) lazily, so commands that need no node
(``key new``) work without one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consensus.address import decode_address, encode_address
from consensus.params import ChainParams
from wallet.amounts import parse_amount, parse_units
from wallet.keystore import Keystore
from wallet.rpcclient import RpcClient, RpcError, resolve_params
from wallet.walletdb import WalletDB

if TYPE_CHECKING:
    from consensus.tx import Tx

DEFAULT_WALLET_DIR = Path("~/.microcash/wallet")
DEFAULT_TX_FEE = 1000  # units, for TRANSFER and ESCROW_CREATE
DEFAULT_WAIT_TIMEOUT = 300.0  # seconds a --wait polls before giving up
WAIT_POLL_INTERVAL = 0.2  # seconds between gettransaction polls (a node without waitfornewblock)
METHOD_NOT_FOUND = -32601  # JSON-RPC 2.0 code an older node answers waitfornewblock with
DOT_INTERVAL = 1.0  # seconds between progress dots on stderr
HASH_HEX_LEN = 64


class WalletError(click.ClickException):
    """A user-facing failure: printed as ``error: <message>``, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr)


def payee_answer(status: int, content: bytes) -> dict[str, Any]:
    """The JSON object a payee service (channel vouchers, MICROPAY) answered with HTTP 200;
    raises WalletError saying what came instead (not JSON, or a refusal and its error)."""
    try:
        reply = json.loads(content)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise WalletError(f"payee answered HTTP {status} {content[:200]!r}, not JSON")
    if status != 200:
        raise WalletError(f"payee refused the request (HTTP {status}): "
                          f"{reply.get('error', reply)}")
    return reply


class TxRejected(WalletError):
    """The node refused a transaction; ``reason`` is the SPEC reject reason (SPEC §2–§8)."""

    def __init__(self, reason: str, detail: Any = None) -> None:
        message = f"node rejected the transaction: {reason}"
        if detail:
            message += f"\n  detail: {detail}"
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- arguments


class AmountType(click.ParamType):
    """An amount: MCASH as a decimal (``1.5``) or units with a ``u`` suffix (``150u``)."""

    name = "AMOUNT"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_amount(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class UnitsType(click.ParamType):
    """A whole number of units (``1000`` or ``1000u``); ``minimum`` bounds it below."""

    name = "UNITS"

    def __init__(self, minimum: int = 0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            units = value
        else:
            try:
                units = parse_units(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if units < self.minimum:
            self.fail(f"must be at least {self.minimum} units, got {units}", param, ctx)
        return units


class FractionType(click.ParamType):
    """A probability ``NUM/DEN`` kept as given (``1/300``; ``1`` means ``1/1``)."""

    name = "NUM/DEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        num_text, sep, den_text = str(value).strip().partition("/")
        if not sep:
            den_text = "1"
        if not (num_text.isdigit() and den_text.isdigit()):
            self.fail(f"{value!r} is not a fraction NUM/DEN of whole numbers, e.g. 1/300",
                      param, ctx)
        num, den = int(num_text), int(den_text)
        if not 0 < num <= den < 2**32:
            self.fail(f"{value!r}: need 0 < NUM <= DEN < 2^32 (a probability)", param, ctx)
        return num, den


class HashType(click.ParamType):
    """A 32-byte id (escrow id, txid) as 64 hex digits; converts to lower-case hex."""

    def __init__(self, what: str) -> None:
        self.name = what.upper().replace(" ", "_")
        self.what = what

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value).strip().lower()
        if len(text) != HASH_HEX_LEN or any(c not in "0123456789abcdef" for c in text):
            self.fail(f"{value!r} is not an {self.what}: expected 64 hex digits", param, ctx)
        return text


AMOUNT = AmountType()
UNITS = UnitsType()
POSITIVE_UNITS = UnitsType(minimum=1)
FRACTION = FractionType()
ESCROW_ID = HashType("escrow id")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object instead of text (for scripts).")
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=1), default=DEFAULT_WAIT_TIMEOUT,
    show_default=True, help="Seconds --wait polls the node before giving up.")


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def progress(message: str, nl: bool = True) -> None:
    """Progress text on stderr (stdout stays machine-readable)."""
    click.echo(message, file=sys.stderr, nl=nl)


# --------------------------------------------------------------------------- context


@dataclass
class WalletContext:
    """Global options of ``microcash-wallet`` and the resources built from them."""

    wallet_dir: Path
    datadir: Path | None = None
    rpc_url: str | None = None
    rpc_cookie: Path | None = None
    passphrase_file: Path | None = None
    _rpc: RpcClient | None = field(default=None, repr=False)
    _info: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def keystore(self) -> Keystore:
        """Named keys under ``<wallet_dir>/keys``."""
        return Keystore(self.wallet_dir)

    @property
    def db(self) -> WalletDB:
        """The wallet's records (``<wallet_dir>/wallet.json``)."""
        return WalletDB(self.wallet_dir)

    # ---- node ----------------------------------------------------------------------

    def node_configured(self) -> bool:
        """Whether a node was named (``--datadir`` or ``--rpc-url``)."""
        return self.datadir is not None or self.rpc_url is not None

    def rpc(self) -> RpcClient:
        """The node's RPC client; WalletError if no node was named."""
        if self._rpc is None:
            if self.rpc_url is not None:
                if self.rpc_cookie is None:
                    raise WalletError("--rpc-url needs --rpc-cookie FILE (the node's .cookie)")
                self._rpc = RpcClient.from_cookie(self.rpc_url, self.rpc_cookie)
            elif self.datadir is not None:
                self._rpc = RpcClient.from_datadir(self.datadir)
            else:
                raise WalletError(
                    "no node given: pass --datadir DIR (the node's data directory; or set "
                    "MICROCASH_DATADIR), or --rpc-url URL with --rpc-cookie FILE"
                )
        return self._rpc

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call (SPEC §12); errors become WalletError in the CLI group."""
        return self.rpc().call(method, *params)

    def info(self, refresh: bool = False) -> dict[str, Any]:
        """``getinfo`` (cached for the command unless ``refresh``)."""
        if self._info is None or refresh:
            info = self.call("getinfo")
            if not isinstance(info, dict) or "genesis_hash" not in info:
                raise WalletError(f"node sent a malformed getinfo reply: {str(info)[:200]}")
            self._info = info
        return self._info

    def height(self) -> int:
        """The node's best height ``t`` (current round ``t + 1``, SPEC §0)."""
        return int(self.info(refresh=True)["height"])

    def genesis_hash(self) -> bytes:
        """The node's genesis hash: part of every signature (SPEC §2, §4)."""
        return bytes.fromhex(self.info()["genesis_hash"])

    def params(self) -> ChainParams:
        """The chain profile the node runs (from ``getinfo.chain``, SPEC §1)."""
        try:
            return resolve_params(str(self.info()["chain"]))
        except ValueError as exc:
            raise WalletError(str(exc)) from None

    def account(self, address: bytes) -> dict[str, Any]:
        """``getaccount``: ``{address, balance, nonce}`` at the node's tip."""
        return self.call("getaccount", address.hex())

    # ---- keys ----------------------------------------------------------------------

    def passphrase(self, name: str, *, confirm: bool = False) -> str:
        """The passphrase for key ``name``: --passphrase-file, else $MICROCASH_PASSPHRASE,
        else a hidden prompt (asked twice when ``confirm``)."""
        if self.passphrase_file is not None:
            try:
                text = self.passphrase_file.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise WalletError(f"cannot read --passphrase-file {self.passphrase_file}: "
                                  f"{exc}") from None
            return text.rstrip("\r\n")
        env = os.environ.get("MICROCASH_PASSPHRASE")
        if env is not None:
            return env
        return click.prompt(f"Passphrase for key {name!r}", hide_input=True,
                            confirmation_prompt=confirm, default="", show_default=False)

    def load_seed(self, name: str) -> bytes:
        """Decrypt key ``name``'s 32-byte seed (asks for the passphrase unless the key was
        created with --empty-passphrase). Raises KeystoreError."""
        store = self.keystore
        passphrase = "" if store.is_encrypted_with_empty(name) else self.passphrase(name)
        return store.load_seed(name, passphrase)

    def key_address(self, name: str) -> bytes:
        """Public key (address) of the wallet key ``name``; KeystoreError if absent."""
        return self.keystore.public_key(name)

    def resolve_address(self, text: str, what: str = "address") -> bytes:
        """A key name of this wallet, or an address (bech32m ``mc1...`` or 64 hex digits).

        A key name wins over an address of the same spelling. Raises click.BadParameter.
        """
        store = self.keystore
        if store.has(text):
            return store.public_key(text)
        try:
            return decode_address(text)
        except ValueError as exc:
            raise click.BadParameter(
                f"{text!r} is neither a key in {store.keys_dir} nor an address ({exc})",
                param_hint=what) from None

    # ---- transactions --------------------------------------------------------------

    def next_nonce(self, sender: bytes) -> int:
        """The nonce for a new TRANSFER / ESCROW_CREATE from ``sender`` (SPEC §2 rule 4).

        The node's account nonce counts confirmed transactions only; this wallet's own
        unconfirmed sends still in the node's mempool with consecutive nonces are added
        on top. Records that are confirmed or gone are forgotten.
        """
        nonce = int(self.account(sender)["nonce"])
        genesis = self.genesis_hash().hex()
        pending = self.db.sent_by(genesis, sender.hex())
        stale = [txid for n, txid in pending.items() if n < nonce]
        while nonce in pending:
            found = self.call("gettransaction", pending[nonce])
            status = found.get("status") if isinstance(found, dict) else None
            if status == "confirmed":
                # mined after the account was read: its nonce is used, not free
                stale.append(pending[nonce])
            elif status != "mempool":
                stale.append(pending[nonce])  # gone (evicted, replaced): reuse its nonce
                break
            nonce += 1
        self.db.forget_sent(stale)
        return nonce

    def submit(self, tx: Tx) -> str:
        """Send ``tx`` with ``sendrawtransaction``; return its txid (hex).

        TRANSFER and ESCROW_CREATE are remembered for ``next_nonce``. Raises TxRejected
        with the node's reject reason.
        """
        from consensus.tx import KIND_NAMES, NONCE_KINDS

        try:
            txid = self.call("sendrawtransaction", tx.encode().hex())
        except RpcError as exc:
            raise TxRejected(exc.message, exc.data) from None
        if tx.kind in NONCE_KINDS:
            self.db.record_sent(self.genesis_hash().hex(), tx.sender.hex(), tx.nonce, txid,
                                KIND_NAMES[tx.kind])
        return txid

    def _wait_for_block(self, tip: str | None, seconds: float) -> str | None:
        """Wait up to ``seconds`` for a tip other than ``tip`` with ``waitfornewblock``
        (push); returns the tip hash then. ``None`` as ``tip`` reads it first; returns
        ``None`` (after sleeping ``WAIT_POLL_INTERVAL``) when the node lacks the method."""
        if tip == "":
            time.sleep(min(seconds, WAIT_POLL_INTERVAL))
            return ""
        try:
            if tip is None:
                info = self.call("getinfo")
                return (info.get("best_hash") if isinstance(info, dict) else None) or ""
            return self.call("waitfornewblock", max(1, int(seconds * 1000)), tip)["hash"]
        except RpcError as exc:
            if exc.code != METHOD_NOT_FOUND:
                raise
            time.sleep(min(seconds, WAIT_POLL_INTERVAL))
            return ""  # polling from now on

    def wait_confirmed(self, txid: str, timeout: float) -> dict[str, Any]:
        """Wait until ``txid`` is in a block; return the ``gettransaction`` reply
        (``{status, height, block_hash, confirmations}``).

        Checks once per new block, woken by the node's ``waitfornewblock`` (an older node
        without it is polled every ``WAIT_POLL_INTERVAL`` s). Prints a line then a dot per
        second on stderr. Raises WalletError when the transaction leaves the mempool
        unmined or ``timeout`` seconds pass.
        """
        progress(f"waiting for {txid} to be mined (up to {timeout:g} s)", nl=False)
        deadline = time.monotonic() + timeout
        next_dot = time.monotonic() + DOT_INTERVAL
        tip = self._wait_for_block(None, 0)  # the tip before the first check: none missed
        try:
            while True:
                found = self.call("gettransaction", txid)
                if isinstance(found, dict) and found.get("status") == "confirmed":
                    self.db.forget_sent([txid])
                    return found
                if found is None:
                    raise WalletError(
                        f"transaction {txid} left the node's mempool without being mined "
                        "(evicted, or replaced by a conflicting one); check the balance "
                        "and send again")
                now = time.monotonic()
                if now >= deadline:
                    raise WalletError(
                        f"transaction {txid} not mined within {timeout:g} s; it is still in "
                        "the mempool (is anyone mining?). Check later with "
                        "`gettransaction` or the wallet's list commands")
                if now >= next_dot:
                    progress(".", nl=False)
                    next_dot = now + DOT_INTERVAL
                tip = self._wait_for_block(tip, min(deadline, next_dot) - now)
        finally:
            progress("")


pass_wallet = click.make_pass_decorator(WalletContext)


def address_text(pubkey: bytes) -> str:
    """The bech32m form of an address (SPEC §0)."""
    return encode_address(pubkey)
