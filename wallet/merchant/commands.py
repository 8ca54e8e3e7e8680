"""Merchant commands: ``merchant serve`` and ``merchant status`` (SPEC §4.1, §7, §13, §16).

``serve`` runs ``wallet.merchant.service.run_merchant`` (the SPEC §13 ticket service plus
the auto-redeemer, and the SPEC §16 voucher service plus the closer) for one wallet key,
with its ticket store in ``<wallet-dir>/merchants/NAME/store``, its channel store in
``<wallet-dir>/merchants/NAME/channels`` and, while it runs, ``service.json`` next to it:
``{"name", "address", "host", "port", "url", "pid"}``. ``status`` asks the running
service (``GET /v1/status``) or, when none answers, reads the store directly.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import click

from wallet.commands.common import (UNITS, WalletContext, WalletError, address_text,
                                    echo_json, json_option, pass_wallet, progress)
from wallet.httpclient import HttpConnections
from wallet.merchant.pos_options import pos_dir, pos_options
from wallet.merchant.terms import terms_options
from wallet.tlsconfig import cacert_option, tls_server_options
from wallet.rpcclient import RpcConnectionError, RpcError

STATUS_TIMEOUT = 5.0  # seconds to wait for a running service's /v1/status
# The node's value (node/main.py); restated because the wallet does not import the node
# (DESIGN "Layers", "Garbage collection").
GC_YOUNG_THRESHOLD = 50_000
# The event loop's Python work (parsing and checking up to 10 000 tickets) holds the GIL;
# the worker pool's manager and feeder threads that hand a chunk to a worker process wait
# for it up to one switch interval each (5 ms by default). 1 ms keeps the first chunk of
# a request from idling the workers for ~10 ms (DESIGN "Worker processes").
SWITCH_INTERVAL = 0.001
COUNT_NAMES = ("held", "winning", "redeemed", "expired", "losing", "failed", "evidence")


@click.group()
def merchant() -> None:
    """Run a merchant's ticket and voucher service, redeemer and closer; inspect them."""


def merchant_dir(wallet: WalletContext, name: str) -> Path:
    """``<wallet-dir>/merchants/NAME``: the store and service.json of merchant key NAME."""
    wallet.key_address(name)  # validates the name and that the key exists
    return wallet.wallet_dir / "merchants" / name


def _write_service_file(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, path)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside a (possibly nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def _serve(seed: bytes, pubkey: bytes, store: Path, rpc: Any, host: str, port: int,
                 fee: int, workers: int, service_file: Path, name: str,
                 listening: list[int], channel_options: dict[str, Any]) -> None:
    """Run the merchant until SIGINT/SIGTERM; service.json exists while it listens.

    The bound port is appended to ``listening`` once the service is up.
    """
    import trio

    from wallet.merchant.service import run_merchant

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(partial(run_merchant, seed, pubkey, store, rpc, host,
                                                port, fee=fee, workers=workers,
                                                **channel_options))
            listening.append(bound)
            scheme = "https" if channel_options.get("tls") else "http"
            url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{bound}"
            _write_service_file(service_file, {"name": name, "address": address_text(pubkey),
                                               "host": host, "port": bound, "url": url,
                                               "pid": os.getpid()})
            click.echo(f"merchant {name} ({address_text(pubkey)}) serving tickets at {url}")
            click.echo(f"store {store}; Ctrl-C or SIGTERM stops it")
            sys.stdout.flush()
            async for signum in signals:
                progress(f"received {signal.Signals(signum).name}, stopping")
                nursery.cancel_scope.cancel()
                break


@merchant.command("serve")
@click.argument("name")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the ticket service listens on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port; 0 picks a free one. The bound port is written to "
                   "<wallet-dir>/merchants/NAME/service.json.")
@click.option("--fee", type=UNITS, default=0, show_default=True,
              help="Least fee in UNITS each REDEEM pays the miner, out of its payout; "
                   "the redeemer pays more when estimatefee asks for it and raises it "
                   "(replace-by-fee) as t_expire nears, never above the payout.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes checking ticket signatures; 1 checks them in a thread of "
                   "the service itself.")
@click.option("--channel-price", type=UNITS, default=0, show_default=True,
              help="UNITS each channel voucher must add at least (SPEC §16 price).")
@click.option("--close-margin", type=click.IntRange(min=0), default=2, show_default=True,
              help="Blocks before a channel's last closable height (expiry_height - 1) at "
                   "which its CHANNEL_CLOSE is sent; vouchers are refused from then on.")
@click.option("--cheat-watch/--no-cheat-watch", default=True, show_default=True,
              help="Announce accepted tickets to the other merchants of each escrow through "
                   "the node network, and send a CHEAT_PROOF (paying --fee) as soon as a "
                   "duplicate or out-of-range ticket is known.")
@click.option("--mp-price", type=UNITS, default=0, show_default=True,
              help="UNITS of expected value (amount x 2^-win_bits) each MICROPAY ticket must "
                   "carry at least (SPEC §15).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default="INFO", show_default=True, help="Log level of the stderr log.")
@pos_options
@terms_options
@tls_server_options
@pass_wallet
def merchant_serve(wallet: WalletContext, name: str, host: str, port: int, fee: int,
                   workers: int, channel_price: int, close_margin: int, cheat_watch: bool,
                   mp_price: int, log_level: str, pos: Any, terms: Any, tls: Any) -> None:
    """Accept tickets for the wallet key NAME and redeem its winners automatically.

    Serves POST /v1/tickets and GET /v1/status (SPEC §13) and, beside it, claims every
    winning ticket inside its redeem window (t_draw+1 ... t_expire). Also takes payment
    channel vouchers (POST /v1/vouchers, GET /v1/channels, SPEC §16), keeps the best one
    per channel in merchants/NAME/channels, closes each channel --close-margin blocks
    before its deadline and proves an equivocating payer with CHANNEL_CHEAT. Publishes
    its terms (--price, --min-p ... --min-penalty-margin) at GET /v1/terms and refuses
    tickets of escrows outside them (terms-not-met); with --tls-cert/--tls-key it serves
    HTTPS. With --point-of-sale N it is one of several points of sale of NAME (own
    stores in merchants/NAME/pos-N), pushing signed receipts to each --peer-pos; only
    point 0 closes channels. And MICROPAY (SPEC §15): hands out commitments (POST
    /v1/mp/commitments), takes tickets (POST /v1/mp/tickets), keeps them in
    merchants/NAME/micropay and claims each winner with MP_CLAIM. Needs the node
    (--datadir). Runs until Ctrl-C or SIGTERM.

    With --cheat-watch (the default) it also announces every accepted ticket to the other
    merchants of its escrow through the node network and sends a CHEAT_PROOF on its own
    as soon as the customer is caught issuing one seqno twice or beyond N; `merchant
    status` shows those proofs.
    """
    import trio

    from wallet.merchant.chainview import NodeError
    from wallet.merchant.channel_store import ChannelStoreError
    from wallet.merchant.mp_store import MpStoreError
    from wallet.merchant.ticketstore import StoreError

    directory = pos_dir(merchant_dir(wallet, name), pos)
    pubkey = wallet.key_address(name)
    seed = wallet.load_seed(name)
    rpc = wallet.rpc()
    wallet.info()  # fail fast, with a clear message, if the node is not there
    directory.mkdir(parents=True, exist_ok=True)
    service_file = directory / "service.json"
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    listening: list[int] = []
    # As the node does (DESIGN "Garbage collection"): a 10 000-ticket request allocates
    # some 50 000 objects; start-up's objects are never scanned again.
    gc.set_threshold(GC_YOUNG_THRESHOLD)
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        trio.run(_serve, seed, pubkey, directory / "store", rpc, host, port, fee, workers,
                 service_file, name, listening,
                 {"channel_store_dir": directory / "channels", "channel_price": channel_price,
                  "close_margin": close_margin, "cheat_watch": cheat_watch, "terms": terms,
                  "tls": tls, "pos": pos, "mp_store_dir": directory / "micropay",
                  "mp_price": mp_price})
    except BaseException as exc:  # noqa: BLE001 -- sorted below; the rest re-raised
        leaves = _leaves(exc)
        for leaf in leaves:
            if isinstance(leaf, OSError):
                if listening:
                    raise WalletError(f"merchant {name} stopped: {leaf}") from None
                raise WalletError(f"cannot listen on {host}:{port}: {leaf}") from None
            if isinstance(leaf, NodeError):
                raise WalletError(f"cannot use the node: {leaf}") from None
            if isinstance(leaf, (StoreError, ChannelStoreError, MpStoreError)):
                raise WalletError(f"{leaf}\n(is another `merchant serve {name}` running?)"
                                  ) from None
            if isinstance(leaf, ValueError):
                raise WalletError(str(leaf)) from None
        if len(leaves) == 1 and leaves[0] is not exc:
            raise leaves[0] from None
        raise
    finally:
        _remove_own_service_file(service_file)
        rpc.close()
    progress(f"merchant {name} stopped")


def _remove_own_service_file(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


# --------------------------------------------------------------------------- status


def _ask_service(service_file: Path, path: str = "/v1/status"
                 ) -> tuple[dict[str, Any], str] | None:
    """``(answer of GET path, url)`` from the running service, or None if none answers."""
    try:
        info = json.loads(service_file.read_text())
        url = str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        connections = HttpConnections(url.rstrip("/") + path, STATUS_TIMEOUT)
        try:
            status, content = connections.request("GET")
        finally:
            connections.close()
        counts = json.loads(content)
    except (OSError, ValueError):
        return None
    if status != 200 or not isinstance(counts, dict):
        return None
    return counts, url


def _read_store(store: Path) -> dict[str, Any]:
    from wallet.merchant.ticketstore import StoreError, TicketStore

    if not store.is_dir():
        return {}
    try:
        with TicketStore(store) as ts:
            return {eid.hex(): counts for eid, counts in ts.summaries().items()}
    except StoreError as exc:
        raise WalletError(f"{exc}\n(is `merchant serve` running without answering on its "
                          "service.json URL? An https:// service needs --cacert FILE)"
                          ) from None


def _channels(directory: Path) -> list[dict[str, Any]]:
    """The payee's channels: from the running service (GET /v1/channels), else its store."""
    asked = _ask_service(directory / "service.json", "/v1/channels")
    if asked is not None and isinstance(asked[0].get("channels"), list):
        return asked[0]["channels"]
    from wallet.merchant.channel_store import ChannelStore, ChannelStoreError

    if not (directory / "channels").is_dir():
        return []
    try:
        with ChannelStore(directory / "channels") as store:
            return store.summaries()
    except ChannelStoreError as exc:
        raise WalletError(str(exc)) from None


def _micropay(directory: Path) -> dict[str, Any] | None:
    """The MICROPAY part (SPEC §15): from the running service (GET /v1/mp/status), else
    its store; None when there is neither."""
    asked = _ask_service(directory / "service.json", "/v1/mp/status")
    if asked is not None and isinstance(asked[0].get("escrows"), list):
        return asked[0]
    from wallet.merchant.mp_service import read_mp_status
    from wallet.merchant.mp_store import MpStoreError

    try:
        return read_mp_status(directory / "micropay")
    except MpStoreError as exc:
        raise WalletError(str(exc)) from None


def _betas(wallet: WalletContext, escrow_ids: list[str]) -> dict[str, int]:
    """beta per escrow: asked from the node when one is given, else remembered ones."""
    known = wallet.db.betas()
    fresh = {}
    if wallet.node_configured():
        try:
            for eid in escrow_ids:
                found = wallet.call("getescrow", eid)
                if found is not None:
                    fresh[eid] = int(found["beta"])
        except (RpcConnectionError, RpcError):
            pass  # the counts are still worth showing; units use what is remembered
    if any(known.get(eid) != beta for eid, beta in fresh.items()):
        wallet.db.remember_betas(fresh)
    return {**known, **fresh}


@merchant.command("status")
@click.argument("name")
@click.option("--point-of-sale", "point_of_sale", type=click.IntRange(0, 255), default=None,
              metavar="N", help="Point of sale N of NAME (merchants/NAME/pos-N).")
@json_option
@cacert_option
@pass_wallet
def merchant_status(wallet: WalletContext, name: str, point_of_sale: int | None,
                    as_json: bool) -> None:
    """Held / winning / redeemed / expired ticket counts per escrow of merchant NAME,
    and its payment channels (best voucher, status).

    Asks the running `merchant serve` (GET /v1/status via service.json), else reads the
    store. Units redeemed = redeemed tickets x beta, before REDEEM fees; beta comes from
    the node (--datadir) or from what this wallet saw before, '?' if neither knows.
    """
    directory = merchant_dir(wallet, name)
    if point_of_sale is not None:
        directory = directory / f"pos-{point_of_sale}"
    asked = _ask_service(directory / "service.json")
    if asked is not None:
        counts, source = asked
    else:
        counts, source = _read_store(directory / "store"), "store"
    betas = _betas(wallet, sorted(counts))
    escrows, total, complete = {}, 0, True
    for eid, row in sorted(counts.items()):
        beta = betas.get(eid)
        units = None if beta is None else beta * int(row.get("redeemed", 0))
        if units is None:
            complete = False
        else:
            total += units
        escrows[eid] = {**{k: int(row.get(k, 0)) for k in COUNT_NAMES}, "beta": beta,
                        "units_redeemed": units}
    channels = _channels(directory)
    cheats = _cheats(directory)
    micropay = _micropay(directory)
    if as_json:
        echo_json({"merchant": name, "address": address_text(wallet.key_address(name)),
                   "source": source, "escrows": escrows,
                   "units_redeemed": total if complete else None, "channels": channels,
                   "cheat_proofs": cheats, "micropay": micropay})
        return
    click.echo(f"merchant {name} ({address_text(wallet.key_address(name))}), from {source}")
    if not escrows:
        click.echo("no tickets yet")
    for eid, row in escrows.items():
        counts_text = ", ".join(f"{row[k]} {k}" for k in COUNT_NAMES)
        units = "?" if row["units_redeemed"] is None else row["units_redeemed"]
        click.echo(f"{eid}: {counts_text}; {units} units redeemed")
    click.echo(f"total redeemed: {total if complete else str(total) + '+?'} units")
    for ch in channels:
        click.echo(f"channel {ch['channel_id']}: voucher {ch['k']} = {ch['cumulative']} of "
                   f"{ch['deposit']} units, {ch['status']}"
                   + (f" ({ch['reason']})" if ch.get("reason") else "")
                   + f", expiry {ch['expiry_height']}")
    for proof in cheats:
        click.echo(_cheat_line(proof))
    if micropay is not None:
        from wallet.merchant.mp_service import status_lines

        for line in status_lines(micropay):
            click.echo(line)


def _cheats(directory: Path) -> list[dict[str, Any]]:
    """Cheat proofs: from the running service (GET /v1/cheats), else the evidence kept in
    the store (its proof status is then unknown)."""
    asked = _ask_service(directory / "service.json", "/v1/cheats")
    if asked is not None and isinstance(asked[0].get("proofs"), list):
        return asked[0]["proofs"]
    from wallet.merchant.ticketstore import StoreError, TicketStore

    if not (directory / "store").is_dir():
        return []
    try:
        with TicketStore(directory / "store") as store:
            return [{"escrow_id": ev.escrow_id.hex(), "seqno": ev.seqno, "kind": ev.kind,
                     "status": "evidence", "txid": None, "height": None, "reason": "",
                     "note": ev.note} for ev in store.evidence()]
    except StoreError:
        return []


def _cheat_line(proof: dict[str, Any]) -> str:
    """One line of `merchant status` about a cheat proof."""
    text = (f"cheat proof {proof.get('kind')} escrow {proof.get('escrow_id')} seqno "
            f"{proof.get('seqno')}: {proof.get('status')}")
    if proof.get("height") is not None:
        text += f" at height {proof['height']}"
    if proof.get("txid"):
        text += f" (tx {proof['txid']})"
    if proof.get("reason"):
        text += f" — {proof['reason']}"
    return text
