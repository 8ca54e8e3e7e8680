"""Prometheus metrics of the merchant service (``GET /metrics`` beside ``/v1/status``).

One ``CollectorRegistry`` per service (never the global one). Counted as requests are
answered: tickets accepted, tickets rejected by SPEC §13 reason, transactions sent by
kind (REDEEM; the proofs of cheating CHEAT_PROOF and CHANNEL_CHEAT also as
``merchant_cheat_proofs_sent_total``). Read from the ticket store at scrape time: tickets
held, winning, redeemed, expired, losing, failed and kept as evidence, summed over
escrows. DESIGN "Operators' view".
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from consensus.errors import ConsensusError
from consensus.tx import CHANNEL_CHEAT, CHEAT_PROOF, KIND_NAMES, Tx

__all__ = ["MerchantMetrics", "CONTENT_TYPE_LATEST"]

TICKET_COUNTS = ("held", "winning", "redeemed", "expired", "losing", "failed", "evidence")


class _StoreCollector:
    """``merchant_tickets{state=...}`` gauges from ``summaries()`` (escrow → counts)."""

    def __init__(self, summaries: Callable[[], dict]) -> None:
        self._summaries = summaries

    def collect(self) -> Iterable[GaugeMetricFamily]:
        totals = dict.fromkeys(TICKET_COUNTS, 0)
        for counts in self._summaries().values():
            for name in TICKET_COUNTS:
                totals[name] += counts.get(name, 0)
        family = GaugeMetricFamily("merchant_tickets",
                                   "Tickets in the store by state, over all escrows.",
                                   labels=["state"])
        for name, value in totals.items():
            family.add_metric([name], value)
        yield family


class MerchantMetrics:
    """Counters and the store collector of one merchant service.

    ``summaries`` returns ``{escrow_id: {held, winning, redeemed, expired, ...}}`` (the
    ticket store's ``summaries``); None leaves the gauges out.
    """

    def __init__(self, summaries: Callable[[], dict] | None = None) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.accepted = Counter("merchant_tickets_accepted", "Tickets accepted and stored.",
                                registry=r)
        self.rejected = Counter("merchant_tickets_rejected",
                                "Tickets rejected, by SPEC §13 reason.", ["reason"], registry=r)
        self.sent = Counter("merchant_transactions_sent",
                            "Transactions the merchant sent to its node, by kind.", ["kind"],
                            registry=r)
        self.cheat_proofs = Counter("merchant_cheat_proofs_sent",
                                    "Proofs of cheating sent (CHEAT_PROOF, CHANNEL_CHEAT).",
                                    registry=r)
        if summaries is not None:
            r.register(_StoreCollector(summaries))

    def on_submit(self, result: dict) -> None:
        """Hook: one ``POST /v1/tickets`` answered with ``result`` (``submit``'s dict)."""
        self.accepted.inc(result["accepted"])
        for item in result["rejected"]:
            self.rejected.labels(reason=item["reason"]).inc()

    def on_sent(self, raw: bytes) -> None:
        """Hook: the transaction ``raw`` was accepted by the node."""
        try:
            kind = Tx.decode(raw).kind
        except ConsensusError:
            return
        self.sent.labels(kind=KIND_NAMES[kind]).inc()
        if kind in (CHEAT_PROOF, CHANNEL_CHEAT):
            self.cheat_proofs.inc()

    def count_sends(self, send: Callable[[bytes], Awaitable]) -> Callable[[bytes], Awaitable]:
        """``send`` (a ``send_raw_transaction``) that also counts what the node accepted."""
        @functools.wraps(send)
        async def counted(raw: bytes):
            result = await send(raw)
            self.on_sent(raw)
            return result
        return counted

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
