"""A user-space link shaper: a transparent TCP relay that delays, slows and "loses" bytes.

Used by ``microcash-devnet up --netns`` where the kernel has no ``netem`` qdisc. One
relay runs in each node's network namespace in front of the node's P2P port::

    peer (10.x.y.11:e) ──► relay 10.x.y.12:18444 ──(source spoofed: 10.x.y.11:e')──► node 10.x.y.12:18445

The relay opens its upstream socket with ``IP_TRANSPARENT`` bound to the client's own
address, so the node sees the real peer IP (bans, address gossip and per-IP limits work
as across real hosts); a policy route in the namespace (``from <node ip> sport 18445
lookup 100``, table 100 ``local 0.0.0.0/0 dev lo``) brings the node's replies back to the
relay instead of onto the wire. Every TCP connection between two nodes crosses exactly
one relay (the accepting node's), which shapes both of its directions, so the one-way
delay is ``latency`` and the round trip ``2·latency`` — as ``netem delay`` on every
namespace's egress would give.

What a byte-stream relay can and cannot emulate:

- latency ± jitter: each chunk read is delivered ``latency + U(-jitter, +jitter)`` later,
  never before the chunk ahead of it (TCP keeps order, so jitter never reorders).
- rate: chunks are serialised at ``rate`` bits/s per direction (a token-bucket link).
- loss: the relay sees an ordered stream, not packets, so it cannot drop one. A chunk of
  ``s`` segments (1448 bytes each) is "lost" with probability ``1 - (1 - loss)^s`` and
  then costs what TCP pays for a lost segment: one retransmission timeout, modelled as
  Linux's ``RTO ≈ RTT + 200 ms`` (``RTT = 2·latency``), during which the stream behind it
  waits (head-of-line blocking). Throughput collapse under heavy loss and fast-retransmit
  subtleties are not modelled.
"""

from __future__ import annotations

import math
import random
import socket
import sys
from dataclasses import dataclass
from functools import partial

import click
import trio

IP_TRANSPARENT = 19  # linux/in.h; not exported by Python's socket module
CHUNK = 65536  # bytes read at once
SEGMENT = 1448  # TCP payload bytes per segment on a 1500-byte MTU (with timestamps)
MIN_RTO = 0.2  # seconds: Linux's TCP_RTO_MIN
QUEUE = 64  # chunks in flight per direction before the reader waits (back-pressure)


@dataclass(frozen=True)
class LinkShape:
    """One direction of a link: ``latency``/``jitter`` in seconds, ``loss`` a probability
    per TCP segment (0..1), ``rate`` in bits per second (0 = unlimited)."""

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate: float = 0.0

    def retransmit_penalty(self) -> float:
        """Seconds a lost segment costs: one RTO (RTT + 200 ms, at least 200 ms)."""
        return max(MIN_RTO, 2 * self.latency + MIN_RTO)


def parse_rate(text: str | None) -> float:
    """A ``tc``-style rate (``10mbit``, ``512kbit``, ``1gbit``, ``800bit``, ``100kbps`` in
    bytes/s) as bits per second; ``None``/``""``/``0`` = unlimited. Raises ValueError."""
    if not text or text.strip() == "0":
        return 0.0
    value = text.strip().lower()
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3, "bit": 1.0,
             "gbps": 8e9, "mbps": 8e6, "kbps": 8e3, "bps": 8.0}
    for unit, factor in units.items():
        if value.endswith(unit):
            number = value[: -len(unit)]
            break
    else:
        number, factor = value, 1.0
    try:
        bits = float(number) * factor
    except ValueError:
        raise ValueError(f"{text!r} is not a rate like 10mbit or 512kbit") from None
    if not bits > 0 or math.isinf(bits):
        raise ValueError(f"{text!r} is not a positive rate")
    return bits


class _Direction:
    """Delivery schedule of one direction of one connection."""

    def __init__(self, shape: LinkShape, rng: random.Random) -> None:
        self.shape = shape
        self.rng = rng
        self.link_free = 0.0  # trio time the (rate-limited) link finishes the last chunk
        self.last_due = 0.0  # delivery time of the previous chunk (order is kept)

    def due(self, now: float, size: int) -> float:
        """When a chunk of ``size`` bytes read at ``now`` is to be written out."""
        shape = self.shape
        sent = max(now, self.link_free)
        if shape.rate:
            sent += size * 8 / shape.rate
        self.link_free = sent
        delay = shape.latency
        if shape.jitter:
            delay = max(0.0, delay + self.rng.uniform(-shape.jitter, shape.jitter))
        if shape.loss:
            segments = max(1, math.ceil(size / SEGMENT))
            if self.rng.random() < 1 - (1 - shape.loss) ** segments:
                delay += shape.retransmit_penalty()
        self.last_due = max(self.last_due, sent + delay)
        return self.last_due


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, direction: _Direction) -> None:
    """Copy ``source`` to ``sink`` on ``direction``'s schedule; half-close at EOF."""
    send, receive = trio.open_memory_channel(QUEUE)

    async def reader() -> None:
        async with send:
            while True:
                data = await source.receive_some(CHUNK)
                await send.send((direction.due(trio.current_time(), len(data)), data))
                if not data:
                    return

    async def writer() -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                if not data:
                    await sink.send_eof()
                    return
                await sink.send_all(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)


async def _open_upstream(target: tuple[str, int], client_ip: str | None) -> trio.SocketStream:
    """Connect to ``target``, from ``client_ip`` (transparently) when given."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        if client_ip is not None:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            await sock.bind((client_ip, 0))
        await sock.connect(target)
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


async def _relay(client: trio.SocketStream, target: tuple[str, int], shape: LinkShape,
                 transparent: bool, rng: random.Random) -> None:
    try:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_ip = client.socket.getpeername()[0] if transparent else None
        upstream = await _open_upstream(target, client_ip)
    except OSError:
        await trio.aclose_forcefully(client)
        return
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, upstream, _Direction(shape, rng))
            nursery.start_soon(_pump, upstream, client, _Direction(shape, rng))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # either end went away: close both
    except BaseExceptionGroup as group:
        _, rest = group.split((trio.BrokenResourceError, trio.ClosedResourceError, OSError))
        if rest is not None:
            raise rest from None
    finally:
        await trio.aclose_forcefully(upstream)
        await trio.aclose_forcefully(client)


async def serve(listen: tuple[str, int], target: tuple[str, int], shape: LinkShape, *,
                transparent: bool = True, seed: int | None = None,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Relay every connection to ``listen`` on to ``target`` shaped by ``shape`` until
    cancelled; reports the bound port through ``task_status``. Raises OSError if
    ``listen`` cannot be bound. ``transparent`` (root) keeps the client's source IP."""
    rng = random.Random(seed)
    listeners = await trio.open_tcp_listeners(listen[1], host=listen[0])
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(_relay, target=target, shape=shape,
                                       transparent=transparent, rng=rng), listeners)


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", required=True, metavar="HOST:PORT", help="Where peers connect.")
@click.option("--to", "target", required=True, metavar="HOST:PORT", help="The node's real port.")
@click.option("--latency", type=click.FloatRange(0), default=0.0, help="One-way delay, ms.")
@click.option("--jitter", type=click.FloatRange(0), default=0.0, help="± uniform jitter, ms.")
@click.option("--loss", type=click.FloatRange(0, 100), default=0.0,
              help="Per-segment loss, %, emulated as one RTO of delay (see module doc).")
@click.option("--rate", default=None, help="Link rate per direction, e.g. 10mbit.")
@click.option("--no-transparent", is_flag=True, help="Connect from our own address (no root).")
@click.option("--seed", type=int, default=None, help="Random seed (reproducible runs).")
def main(listen, target, latency, jitter, loss, rate, no_transparent, seed):
    """Shape one node's P2P port in user space (for hosts without tc netem)."""
    try:
        shape = LinkShape(latency / 1000, jitter / 1000, loss / 100, parse_rate(rate))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from None
    try:
        trio.run(partial(serve, _hostport(listen), _hostport(target), shape,
                         transparent=not no_transparent, seed=seed))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        click.echo(f"shaper: cannot listen on {listen}: {exc.strerror or exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
