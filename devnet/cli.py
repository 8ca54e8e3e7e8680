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
@click.option("--tls", is_flag=True,
              help="Also make a local CA in DIR/tls and a certificate for 127.0.0.1 / "
                   "localhost that merchants serve HTTPS with (--tls-cert/--tls-key; "
                   "wallets verify it with --cacert DIR/tls/ca.pem).")
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
def up(root, nodes, miners, chain, tls, netns_nodes, latency, jitter, loss, rate, shaper):
    """Write genesis + dev wallet, start N nodes on 127.0.0.1 and connect them.

    Each node serves its block explorer and /metrics (the URL is printed). With --netns N
    the nodes get their own network namespaces and addresses (10.250.x.10+i) and the
    links are shaped by --latency/--jitter/--loss/--rate; the output says whether tc netem
    or the user-space relay shapes them. `down` removes every namespace, veth and bridge
    `up` made.
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
        started = devnet.up(nodes, miners=min(miners, nodes), progress=Progress(),
                            netns=shaping)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"devnet up in {devnet.root}; dev keys in {devnet.wallet_dir} (empty passphrase)")
    if started[0].explorer_url:
        click.echo(f"explorer: {started[0].explorer_url} (metrics at {started[0].explorer_url}metrics)")
    click.echo(f"try: microcash-wallet --wallet-dir {devnet.wallet_dir} "
               f"--datadir {devnet.root / 'node0'} balance customer")
    if tls:
        from devnet.ca import make_local_ca

        ca = make_local_ca(devnet.root / "tls")
        click.echo(f"TLS: merchant serve NAME --tls-cert {ca.server_cert} --tls-key "
                   f"{ca.server_key}; wallets: --cacert {ca.cacert}")


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
                       f"peers {r['peers']} (p2p {r['host']}:{r['p2p']}, rpc {r['rpc']}"
                       f"{', explorer ' + r['explorer'] if r['explorer'] else ''})")


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
@click.option("--tls", is_flag=True,
              help="Merchants serve HTTPS with a certificate of a local CA made for the "
                   "demo (DIR/tls); every connection to them verifies it.")
@click.option("--hold/--no-hold", default=None,
              help="After the summary keep the devnet (and its explorer) running until "
                   "Ctrl-C. Default: hold on an interactive terminal, not in CI or a pipe.")
def demo(nodes, demo_root, tls, hold):
    """Run the MicroCash scenario on a fresh devnet; exit 1 if any checked fact fails.

    Progress bars on a terminal, plain lines otherwise; the summary ends with the URL of
    the customer node's block explorer.
    """
    from devnet.demo import run_demo
    progress = Progress(say=click.echo)
    if hold is None:
        hold = progress.interactive
    try:
        ok = run_demo(demo_root.resolve(), nodes, progress=progress, hold=hold, tls=tls)
    except DevnetError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


@cli.command()
@click.option("--merchants", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Merchants the customer pays (one escrow / channel set for all).")
@click.option("--payments-per-block", type=click.IntRange(1, 4096), default=128,
              show_default=True, help="Payments per block, all merchants together.")
@click.option("--value", type=click.IntRange(1, 10**8), default=100_000, show_default=True,
              help="Expected value of one payment, in units (1 MCASH = 10^8).")
@click.option("--blocks", type=click.IntRange(1, 1000), default=40, show_default=True,
              help="Blocks of payments (rounded up to whole MicroCash draw groups).")
@click.option("--win-bits", type=click.IntRange(1, 20), default=5, show_default=True,
              help="Winning probability 2^-bits of MicroCash and MICROPAY tickets.")
@click.option("--points-of-sale", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Points of sale per merchant in the penalised channels.")
@click.option("--nodes", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the MICROPAY randomness r1, r2 (a measurement, not keys).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report (one record per scheme) as JSON here.")
@click.option("--dir", "compare_root", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".devnet-compare"), show_default=True,
              help="Scratch directory (wiped first).")
def compare(merchants, payments_per_block, value, blocks, win_bits, points_of_sale, nodes,
            seed, json_file, compare_root):
    """Run one workload through MicroCash, MICROPAY and payment channels (Spilman and
    penalised) on a fresh devnet, count everything from the chain, and print one table
    plus what a cheating payer gained in each scheme (SPEC §17).

    Exits 1 if an invariant fails: money conservation, every winner paid or expired,
    refunds returned.
    """
    import json

    from consensus.params import get_params
    from devnet.compare import CHAIN, format_table, run_compare
    from devnet.compare_workload import WorkloadError, make_workload
    from wallet.rpcclient import RpcConnectionError, RpcError
    try:
        workload = make_workload(get_params(CHAIN), merchants, payments_per_block, value,
                                 blocks, win_bits, points_of_sale)
    except WorkloadError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        ok, report = run_compare(compare_root.resolve(), workload, nodes, seed,
                                 say=lambda m: click.echo(m))
    except (DevnetError, RpcError, RpcConnectionError) as exc:
        raise click.ClickException(f"compare stopped: {exc}") from None
    for line in format_table(report):
        click.echo(line)
    click.echo(f"result: {'all invariants hold' if ok else 'AN INVARIANT FAILED'} "
               f"({report['seconds']} s)")
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"report written to {json_file}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    cli()
