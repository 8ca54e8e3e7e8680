"""``microcash-node``: run one MicroCash node (SPEC §12.1).

Every start-up failure ends the process with exit status 1 and ONE line
``cannot start: <why>`` on stderr (and in ``node.log`` once logging is set up), never a
traceback. A store write failure after start-up stops the node cleanly with exit
status 1 (DESIGN "Storage faults").
"""

import errno
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import click
import plyvel
import trio

from consensus.address import decode_address
from consensus.params import PROFILES, get_params
from node.genesis import GenesisError, load_genesis
from node.logsetup import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LOG_FORMATS, setup_logging
from node.store import StoreError, _first_line

log = logging.getLogger("node")
_logging_ready = False
# Objects allocated between young-generation collections (CPython's default is 700). A
# block, an RPC batch or a mempool refill allocates tens of thousands of short-lived
# objects, and with the default each of them triggers dozens of collections that promote
# survivors toward full collections of the whole heap (DESIGN "Garbage collection").
GC_YOUNG_THRESHOLD = 50_000


def _cannot_start(why: str) -> NoReturn:
    """Report a start-up failure as one line and exit with status 1."""
    if _logging_ready:
        log.error("cannot start: %s", why)
    else:
        click.echo(f"cannot start: {why}", err=True)
    sys.exit(1)


def _describe(exc: BaseException) -> str:
    """One line for an OSError or another start-up exception."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (trio wraps task errors in groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _check_datadir(datadir: Path) -> None:
    """Create ``datadir`` if needed and prove it writable; else ``_cannot_start``."""
    try:
        datadir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=datadir, prefix=".write-test"):
            pass
    except OSError as exc:
        _cannot_start(f"the data directory {datadir} is not usable: {exc.strerror or exc}")


def _check_port(what: str, host: str, port: int) -> None:
    """Refuse a fixed port another process listens on, or a --bind/--rpc-bind address this
    host does not have (the bind is retried by the servers themselves; this only makes
    the message name the address and the option)."""
    option = {"p2p": "--bind", "rpc": "--rpc-bind"}.get(what, "--http-port")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _cannot_start(f"{option} {host!r} is not an address of this host ({exc.strerror})")
    family, _, _, _, sockaddr = infos[0]
    where = f"{_bracket(host)}:{port}"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio and hypercorn
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _cannot_start(f"{what} port {where} is already in use "
                              f"(another node? choose another --{what}-port)")
            if exc.errno == errno.EADDRNOTAVAIL:
                _cannot_start(f"{option} {host}: not an address of this host")
            _cannot_start(f"cannot bind the {what} port {where}: {_describe(exc)}")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


# -- binding (p2p and RPC listen addresses, who may call the RPC, what peers are told) ---
def _parse_bind(value: str, option: str) -> str:
    """A --bind/--rpc-bind value: an IPv4 or IPv6 literal (brackets allowed) or a name."""
    host = value.strip().removeprefix("[").removesuffix("]")
    if not host:
        raise click.BadParameter("an empty address; use 0.0.0.0 or :: for every address",
                                 param_hint=option)
    return host


def _parse_externalip(value: str | None) -> tuple[str, int] | None:
    """--externalip HOST or HOST:PORT (IPv6 as [addr]:port); port 0 = the bound port."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "0"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(f"{value!r}: HOST must be an IP address (peers never look "
                                 "names up)", param_hint="--externalip") from None
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{value!r}: bad port", param_hint="--externalip")
    return host, int(port)


def _parse_allow_ips(values: tuple[str, ...]) -> tuple:
    from node.rpc import parse_allow_ip
    try:
        return tuple(parse_allow_ip(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rpc-allow-ip") from None


def binding_options(command):
    """The listen/announce options of ``microcash-node`` (kept together, applied bottom-up)."""
    options = [
        click.option("--bind", "p2p_host", default="127.0.0.1", show_default=True,
                     metavar="HOST",
                     help="P2P listen address: an IPv4/IPv6 address of this host, "
                          "0.0.0.0 (every IPv4 address) or :: (every address)."),
        click.option("--rpc-bind", "rpc_host", default="127.0.0.1", show_default=True,
                     metavar="HOST", help="JSON-RPC listen address (as --bind)."),
        click.option("--rpc-allow-ip", "rpc_allow_ip", multiple=True, metavar="CIDR",
                     help="Client network the JSON-RPC serves, e.g. 10.0.0.0/24; repeatable. "
                          "Default: loopback only (127.0.0.0/8, ::1). When given, ONLY the "
                          "listed networks are served (add 127.0.0.1 to keep local tools); "
                          "others get HTTP 403."),
        click.option("--externalip", metavar="HOST[:PORT]",
                     help="Address announced to peers (hello's listen port, `addr`) when "
                          "they must dial something other than --bind, e.g. behind NAT "
                          "or a relay. Default: peers learn our address from the socket."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


async def _serve(node, reindex_order: list[bytes] | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, node)
        if reindex_order is not None and not await _reindex(node, reindex_order):
            node.store.close()
            nursery.cancel_scope.cancel()
            return
        await node.run()
        nursery.cancel_scope.cancel()


async def _reindex(node, order: list[bytes]) -> bool:
    """Offer every kept block again, oldest first, through the normal block path;
    False if a stop was requested first (the store stays marked for ``--reindex``)."""
    from node.storecheck import finish_reindex
    log.info("reindex: replaying %d stored blocks", len(order))
    for count, block_hash in enumerate(order, 1):
        if node.stop_requested.is_set():
            log.warning("reindex interrupted at height %d; start again with --reindex",
                        node.chain.height)
            return False
        raw = node.store.get_block(block_hash)
        if raw is not None:
            await node.process_block(raw)
        if count % 1000 == 0:
            log.info("reindex: %d/%d blocks, height %d", count, len(order), node.chain.height)
    finish_reindex(node.store)
    log.info("reindex done: height %d", node.chain.height)
    return True


async def _watch_signals(node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            node.request_stop()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--datadir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Store, cookie and logs; created if missing.")
@click.option("--chain", type=click.Choice(sorted(PROFILES)), default="devnet", show_default=True,
              help="Parameter profile (SPEC §1).")
@click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Genesis JSON {chain, genesis_time, premine}; default: the profile's built-in genesis.")
@click.option("--p2p-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="P2P port on the --bind address (0 = pick one, see <datadir>/ports.json).")
@click.option("--rpc-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="JSON-RPC port on the --rpc-bind address (0 = pick one, see <datadir>/ports.json).")
@click.option("--connect", "connect", multiple=True, metavar="HOST:PORT",
              help="Peer to keep connected to; repeatable.")
@click.option("--mine", "mine", metavar="ADDRESS",
              help="Mine continuously, paying the coinbase to ADDRESS (bech32m or hex).")
@click.option("--reindex", is_flag=True,
              help="Rebuild the chainstate from the stored blocks (the remedy for a damaged "
                   "store); if the blocks are unreadable, delete the store and re-sync.")
@click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Worker processes for signature batches and VDF work (0 = inline).")
@click.option("--mempool-max-txs", type=click.IntRange(1, 1_000_000), default=20_000,
              show_default=True,
              help="Most transactions the mempool holds; when full, a newcomer must pay more "
                   "per byte than the cheapest pooled one, which it evicts.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default="INFO", show_default=True)
# -- operators' view (DESIGN "Operators' view"): explorer + /metrics, log format, rotation
@click.option("--http-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the block explorer and Prometheus /metrics on 127.0.0.1:PORT "
                   "(0 = pick one, see <datadir>/ports.json). Off unless given.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              help="text: one human line per record; json: one JSON object per line "
                   "{ts, level, logger, msg} for log shippers.")
@click.option("--log-max-bytes", type=click.IntRange(0, None), default=DEFAULT_MAX_BYTES,
              show_default=True, help="Rotate node.log when it reaches this size (0 = never).")
@click.option("--log-backups", type=click.IntRange(0, 1000), default=DEFAULT_BACKUPS,
              show_default=True, help="Rotated logs kept (node.log.1 ... node.log.N).")
@binding_options
def cli(datadir, chain, genesis_file, p2p_port, rpc_port, connect, mine, reindex, workers,
        mempool_max_txs, log_level, http_port, log_format, log_max_bytes, log_backups,
        p2p_host, rpc_host, rpc_allow_ip, externalip):
    """Run a MicroCash node: LevelDB store, P2P gossip, JSON-RPC, optional miner.

    Stop it with Ctrl-C, SIGTERM or the `stop` RPC; it resumes from its store on restart.
    """
    peers = [_parse_hostport(c) for c in connect]
    p2p_host = _parse_bind(p2p_host, "--bind")
    rpc_host = _parse_bind(rpc_host, "--rpc-bind")
    allow_ip = _parse_allow_ips(rpc_allow_ip)
    external = _parse_externalip(externalip)
    try:
        mine_address = decode_address(mine) if mine else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mine") from None
    try:
        params = load_genesis(genesis_file, chain) if genesis_file else get_params(chain)
    except GenesisError as exc:
        _cannot_start(str(exc))
    _check_datadir(datadir)
    try:
        setup_logging(datadir / "node.log", log_level, log_format=log_format,
                      max_bytes=log_max_bytes, backups=log_backups)
    except OSError as exc:
        _cannot_start(f"cannot write the log {datadir / 'node.log'}: {_describe(exc)}")
    global _logging_ready
    _logging_ready = True
    _check_port("p2p", p2p_host, p2p_port)
    _check_port("rpc", rpc_host, rpc_port)
    if http_port is not None:
        _check_port("http", "127.0.0.1", http_port)
    from node.node import Node  # imported late so --help stays fast
    from node.storecheck import check_store, prepare_reindex
    gc.set_threshold(GC_YOUNG_THRESHOLD)  # DESIGN "Garbage collection"
    reindex_order = None
    try:
        if reindex:
            reindex_order = prepare_reindex(datadir / "chain")
        else:
            check_store(datadir / "chain")
        node = Node(params, datadir, p2p_port=p2p_port, rpc_port=rpc_port, connect=peers,
                    mine_address=mine_address, workers=workers, p2p_host=p2p_host,
                    rpc_host=rpc_host, rpc_allow_ip=allow_ip, external=external,
                    http_port=http_port)
        node.mempool.max_txs = mempool_max_txs
    except StoreError as exc:
        _cannot_start(str(exc))
    except plyvel.Error as exc:  # a damaged table found while loading the block index
        _cannot_start(f"the store {datadir / 'chain'} is damaged ({_first_line(exc)}); "
                      "restart the node with --reindex to rebuild it")
    except Exception as exc:  # e.g. foreign genesis
        _cannot_start(_describe(exc))
    ports_file = datadir / "ports.json"  # written once both servers listen
    try:
        ports_file.unlink(missing_ok=True)
    except OSError as exc:
        _cannot_start(f"cannot replace {ports_file}: {_describe(exc)}")
    gc.freeze()  # what start-up loaded (the block index) is never scanned again
    try:
        trio.run(_serve, node, reindex_order)
    except BaseException as exc:  # noqa: B036 - classified below, re-raised if unknown
        leaves = _leaves(exc)
        store_errors = [e for e in leaves if isinstance(e, StoreError)]
        if store_errors:
            if ports_file.exists():
                log.error("stopped: %s", store_errors[0])
                sys.exit(1)
            _cannot_start(str(store_errors[0]))
        if not ports_file.exists() and all(isinstance(e, Exception) for e in leaves):
            _cannot_start("; ".join(_describe(e) for e in leaves))
        raise
    if node.store.failed is not None:
        log.error("stopped: %s", node.store.failed)
        sys.exit(1)

if __name__ == "__main__":
    cli()
