"""``microcash-node``: run one MicroCash node (SPEC §12.1)."""

import logging
import signal
import sys
from pathlib import Path

import click
import trio

from consensus.address import decode_address
from consensus.params import PROFILES, get_params
from node.genesis import GenesisError, load_genesis

log = logging.getLogger("node")


def _setup_logging(datadir: Path, level: str) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(datadir / "node.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)


def _parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host, int(port)


async def _serve(node) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, node)
        await node.run()
        nursery.cancel_scope.cancel()


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
              help="P2P port on 127.0.0.1 (0 = pick one, see <datadir>/ports.json).")
@click.option("--rpc-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="JSON-RPC port on 127.0.0.1 (0 = pick one, see <datadir>/ports.json).")
@click.option("--connect", "connect", multiple=True, metavar="HOST:PORT",
              help="Peer to keep connected to; repeatable.")
@click.option("--mine", "mine", metavar="ADDRESS",
              help="Mine continuously, paying the coinbase to ADDRESS (bech32m or hex).")
@click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Worker processes for signature batches and VDF work (0 = inline).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default="INFO", show_default=True)
def cli(datadir, chain, genesis_file, p2p_port, rpc_port, connect, mine, workers, log_level):
    """Run a MicroCash node: LevelDB store, P2P gossip, JSON-RPC, optional miner.

    Stop it with Ctrl-C, SIGTERM or the `stop` RPC; it resumes from its store on restart.
    """
    peers = [_parse_hostport(c) for c in connect]
    try:
        mine_address = decode_address(mine) if mine else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mine") from None
    try:
        params = load_genesis(genesis_file, chain) if genesis_file else get_params(chain)
    except GenesisError as exc:
        raise click.UsageError(str(exc)) from None
    datadir.mkdir(parents=True, exist_ok=True)
    _setup_logging(datadir, log_level)
    from node.node import Node  # imported late so --help stays fast
    try:
        node = Node(params, datadir, p2p_port=p2p_port, rpc_port=rpc_port, connect=peers,
                    mine_address=mine_address, workers=workers)
    except Exception as exc:  # e.g. store locked by another node, foreign genesis
        log.error("cannot start: %s", exc)
        sys.exit(1)
    trio.run(_serve, node)


if __name__ == "__main__":
    cli()
