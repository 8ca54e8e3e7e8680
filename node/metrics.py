"""Prometheus metrics of one node (``GET /metrics`` on the ``--http-port`` server).

Every node owns a ``prometheus_client.CollectorRegistry`` (never the process-global one,
so several nodes in one process — tests — do not collide). Two kinds of series:

- read at scrape time from the node (``NodeCollector``): height, best header height,
  peers, mempool transactions and bytes, live escrows, burned and issued units, banned
  IPs and the bans made so far;
- counted as things happen (hooks the node calls): blocks connected, their connect time
  (histogram, seconds per block), reorgs and the blocks they disconnected, tickets
  redeemed by connected blocks, RPC request latency per method.

Counters restart at 0 with the process, as Prometheus expects (``rate()`` handles it).
DESIGN "Operators' view".
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from consensus.state import get_burned, get_issued, iter_escrows
from consensus.tx import REDEEM

if TYPE_CHECKING:
    from node.node import Node

__all__ = ["NodeMetrics", "CONTENT_TYPE_LATEST"]

# Connect times of a block: sub-millisecond (empty regtest block) to seconds (7 680 tickets).
CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
               30.0, 600.0)


class NodeCollector:
    """Gauges read from ``node`` at each scrape (a ``prometheus_client`` custom collector).

    The live-escrow count walks the escrow table once per new tip and is cached by tip
    hash, so frequent scrapes of an idle node cost nothing.
    """

    def __init__(self, node: "Node") -> None:
        self._node = node
        self._escrows_at: tuple[bytes, int] | None = None  # (tip hash, live escrows)

    def _live_escrows(self) -> int:
        tip = self._node.chain.tip.hash
        if self._escrows_at is None or self._escrows_at[0] != tip:
            count = sum(1 for _ in iter_escrows(self._node.store.state))
            self._escrows_at = (tip, count)
        return self._escrows_at[1]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        node = self._node
        state = node.store.state
        pool = node.mempool
        yield _gauge("microcash_height", "Height of the connected tip.", node.chain.height)
        yield _gauge("microcash_best_header_height",
                     "Height of the most-work header known (what sync heads for).",
                     node.chain.best_header_height())
        yield _gauge("microcash_peers", "Connected peers.", node.network.peer_count())
        yield _gauge("microcash_mempool_transactions", "Transactions in the mempool.",
                     len(pool))
        yield _gauge("microcash_mempool_bytes", "Encoded bytes of the mempool's transactions.",
                     sum(e.size for e in pool.entries.values()))
        yield _gauge("microcash_escrows_open", "Live (not yet refunded) escrows.",
                     self._live_escrows())
        yield _gauge("microcash_burned_units", "Units burned by proofs of cheating (SPEC §8).",
                     get_burned(state))
        yield _gauge("microcash_issued_units", "Units issued: premine plus block rewards.",
                     get_issued(state))
        yield _gauge("microcash_banned_ips", "IP addresses banned now (SPEC §11).",
                     _banned(node))
        yield CounterMetricFamily("microcash_bans", "Bans of misbehaving peers' IPs made.",
                                  value=node.network.bans.bans_made)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _banned(node: "Node") -> int:
    """IPs whose ban has not expired (the ban list reads the trio clock; outside trio,
    e.g. a TestClient, every entry kept counts)."""
    bans = node.network.bans
    try:
        return bans.active()
    except RuntimeError:  # not in a trio run
        return len(bans)


class NodeMetrics:
    """The registry and hooks of one node; ``render()`` is the ``/metrics`` body."""

    def __init__(self, node: "Node | None" = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.blocks_connected = Counter("microcash_blocks_connected",
                                        "Blocks connected to the main chain.", registry=r)
        self.block_connect_seconds = Histogram(
            "microcash_block_connect_seconds",
            "Time to connect one block (checks, state transition, store batch).",
            buckets=CONNECT_BUCKETS, registry=r)
        self.reorgs = Counter("microcash_reorgs", "Chain reorganisations.", registry=r)
        self.blocks_disconnected = Counter("microcash_blocks_disconnected",
                                           "Blocks disconnected by reorganisations.",
                                           registry=r)
        self.tickets_redeemed = Counter("microcash_tickets_redeemed",
                                        "Tickets redeemed by REDEEMs in connected blocks.",
                                        registry=r)
        self.rpc_seconds = Histogram("microcash_rpc_request_seconds",
                                     "JSON-RPC call latency by method.", ["method"],
                                     buckets=RPC_BUCKETS, registry=r)
        if node is not None:
            r.register(NodeCollector(node))

    def on_block_connected(self, seconds: float) -> None:
        """Hook: one block connected in ``seconds``."""
        self.blocks_connected.inc()
        self.block_connect_seconds.observe(seconds)

    def on_tip_change(self, connected: list, disconnected: list) -> None:
        """Hook: a tip change with these decoded blocks (``consensus.block.Block``)."""
        if disconnected:
            self.reorgs.inc()
            self.blocks_disconnected.inc(len(disconnected))
        tickets = sum(len(tx.body) for block in connected for tx in block.txs
                      if tx.kind == REDEEM)
        if tickets:
            self.tickets_redeemed.inc(tickets)

    def instrument(self, methods: Mapping[str, Callable[..., Any]]) -> dict[str, Callable]:
        """The RPC method table with each call timed into ``rpc_seconds{method}``.

        The wrappers keep their method's signature (``functools.wraps``), so the
        dispatcher's parameter checks see the original; an ``async`` method's time
        covers its whole await.
        """
        return {name: self._timed(name, func) for name, func in methods.items()}

    def _timed(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        histogram = self.rpc_seconds.labels(method=name)

        @functools.wraps(func)
        def call(*args, **kwargs):
            started = time.perf_counter()
            result = None
            try:
                result = func(*args, **kwargs)
            finally:
                if not inspect.isawaitable(result):
                    histogram.observe(time.perf_counter() - started)
            if inspect.isawaitable(result):
                return _timed_await(result, histogram, started)
            return result

        return call

    def render(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


async def _timed_await(awaitable, histogram, started: float):
    try:
        return await awaitable
    finally:
        histogram.observe(time.perf_counter() - started)
