"""``microcash-devnet``: local multi-node networks and the end-to-end demo."""

import sys
from pathlib import Path

import click

from devnet.launcher import Devnet, DevnetError

DEFAULT_ROOT = Path(".devnet")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_ROOT, show_default=True, help="Where the devnet lives.")
@click.pass_context
def cli(ctx, root):
    """Start, inspect and stop a local MicroCash devnet; run the demo scenario."""
    ctx.obj = root


@cli.command()
@click.option("--nodes", type=click.IntRange(1, 16), default=3, show_default=True)
@click.option("--miners", type=click.IntRange(0, 16), default=1, show_default=True,
              help="How many of the nodes mine (PoW is CPU-bound: one is plenty).")
@click.option("--chain", type=click.Choice(["devnet", "regtest"]), default="devnet",
              show_default=True)
@click.option("--netns", "netns_nodes", type=click.IntRange(1, 200), metavar="N",
              help="Run N nodes (instead of --nodes), each in its own network namespace "
                   "joined by veths and a bridge, as on separate hosts (root, Linux).")
@click.option("--latency", type=click.FloatRange(0), default=0.0, show_default=True,
              metavar="MS", help="--netns: one-way delay on every link.")
@click.option("--jitter", type=click.FloatRange(0), default=0.0, show_default=True,
              metavar="MS", help="--netns: ± jitter on the delay.")
@click.option("--loss", type=click.FloatRange(0, 100), default=0.0, show_default=True,
              metavar="PCT", help="--netns: packet loss (user-space shaping emulates it as "
                                  "a TCP retransmission delay).")
@click.option("--rate", metavar="RATE", help="--netns: link rate, e.g. 10mbit.")
@click.option("--shaper", type=click.Choice(["auto", "netem", "relay"]), default="auto",
              show_default=True,
              help="--netns: tc netem, a user-space relay, or netem where the kernel has it.")
@click.pass_obj
def up(root, nodes, miners, chain, netns_nodes, latency, jitter, loss, rate, shaper):
    """Write genesis + dev wallet, start N nodes on 127.0.0.1 and connect them.

    With --netns N the nodes get their own network namespaces and addresses
    (10.250.x.10+i) and the links are shaped by --latency/--jitter/--loss/--rate;
    the output says whether tc netem or the user-space relay shapes them. `down`
    removes every namespace, veth and bridge `up` made.
    """
    from devnet.netns import Shaping
    from devnet.shaper import parse_rate
    shaping = None
    if netns_nodes is not None:
        nodes = netns_nodes
        if rate:
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--rate") from None
        shaping = Shaping(latency, jitter, loss, rate, shaper)
    elif latency or jitter or loss or rate or shaper != "auto":
        raise click.UsageError("--latency/--jitter/--loss/--rate/--shaper need --netns N")
    devnet = Devnet(root, chain=chain)
    try:
        devnet.up(nodes, miners=min(miners, nodes), netns=shaping)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"devnet up in {devnet.root}; dev keys in {devnet.wallet_dir} (empty passphrase)")
    click.echo(f"try: microcash-wallet --wallet-dir {devnet.wallet_dir} "
               f"--datadir {devnet.root / 'node0'} balance customer")


@cli.command()
@click.pass_obj
def status(root):
    """Show each node's height, tip and peers."""
    rows = Devnet(root).status()
    if not rows:
        raise click.ClickException(f"no devnet recorded in {root} (run `microcash-devnet up`)")
    for r in rows:
        if not r["running"]:
            click.echo(f"{r['node']}: not running")
        elif r["height"] is None:
            click.echo(f"{r['node']}: running (pid {r['pid']}), RPC not answering")
        else:
            click.echo(f"{r['node']}: height {r['height']} tip {r['tip'][:16]}… "
                       f"peers {r['peers']} (p2p {r['host']}:{r['p2p']}, rpc {r['rpc']})")


@cli.command()
@click.pass_obj
def down(root):
    """Stop exactly the node processes `up` started; remove its namespaces and links."""
    stopped = Devnet(root).down()
    click.echo(f"{stopped} node(s) stopped")


@cli.command()
@click.option("--nodes", type=click.IntRange(2, 8), default=3, show_default=True)
@click.option("--dir", "demo_root", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".devnet-demo"), show_default=True,
              help="Scratch directory (wiped first).")
def demo(nodes, demo_root):
    """Run the MicroCash scenario on a fresh devnet; exit 1 if any checked fact fails."""
    from devnet.demo import run_demo
    try:
        ok = run_demo(demo_root.resolve(), nodes, say=lambda m: click.echo(m))
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cli()
