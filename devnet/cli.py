"""``microcash-devnet``: local multi-node networks and the end-to-end demo."""

import sys
from pathlib import Path

import click

from devnet.launcher import Devnet, DevnetError
from devnet.progress import Progress

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
@click.pass_obj
def up(root, nodes, miners, chain):
    """Write genesis + dev wallet, start N nodes on 127.0.0.1 and connect them."""
    devnet = Devnet(root, chain=chain)
    try:
        started = devnet.up(nodes, miners=min(miners, nodes), progress=Progress())
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"devnet up in {devnet.root}; dev keys in {devnet.wallet_dir} (empty passphrase)")
    click.echo(f"explorer: {started[0].explorer_url} (metrics at {started[0].explorer_url}metrics)")
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
                       f"peers {r['peers']} (p2p {r['p2p']}, rpc {r['rpc']}"
                       f"{', explorer ' + r['explorer'] if r['explorer'] else ''})")


@cli.command()
@click.pass_obj
def down(root):
    """Stop exactly the node processes `up` started."""
    stopped = Devnet(root).down()
    click.echo(f"{stopped} node(s) stopped")


@cli.command()
@click.option("--nodes", type=click.IntRange(2, 8), default=3, show_default=True)
@click.option("--dir", "demo_root", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".devnet-demo"), show_default=True,
              help="Scratch directory (wiped first).")
@click.option("--hold/--no-hold", default=None,
              help="After the summary keep the devnet (and its explorer) running until "
                   "Ctrl-C. Default: hold on an interactive terminal, not in CI or a pipe.")
def demo(nodes, demo_root, hold):
    """Run the MicroCash scenario on a fresh devnet; exit 1 if any checked fact fails.

    Progress bars on a terminal, plain lines otherwise; the summary ends with the URL of
    the customer node's block explorer.
    """
    from devnet.demo import run_demo
    progress = Progress(say=click.echo)
    if hold is None:
        hold = progress.interactive
    try:
        ok = run_demo(demo_root.resolve(), nodes, progress=progress, hold=hold)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cli()
