"""Escrow roll-over: keep paying one merchant across escrows (issue 8 point 7; DESIGN
"Replace-by-fee and escrow roll-over").

``ticket issue --follow`` issues ``count`` tickets in every round, woken by each new
block (``waitfornewblock``). An escrow issues only in rounds ``start … start + l_esc − 1``
and ``start = created_height + confirm_depth + 1`` (SPEC §3.2), so waiting for the last
round before creating the next escrow would leave ``confirm_depth + 1`` rounds unpaid.
The follower sends the next ESCROW_CREATE (same parameters and merchants, the least
penalty unless the first escrow's was higher) at the last tip ``t`` from which it still
starts in time if mined up to ``lead`` blocks late::

    t = last_round − confirm_depth − 1 − lead

Mined in the next block, the new escrow starts ``lead`` rounds before the old one ends
(those first rounds of it stay unused; their share of the escrow is refunded at its
``t_refund``); mined ``lead`` blocks late, it starts right after. Each round's batch
comes from the oldest escrow issuing in that round, so the old one is used to its end.

Every event is one ``Event`` — a batch (round, escrow, seqnos, the merchant's answer), an
escrow sent / confirmed, or a round with no issuing escrow (a gap) — handed to ``emit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.escrow import EscrowState
from wallet.commands.common import DEFAULT_TX_FEE, WalletContext, WalletError
from wallet.customer.escrow import (confirm_escrow_create, prepare_escrow_create,
                                    submit_escrow_create)
from wallet.customer.issuer import IssueError, TicketIssuer
from wallet.walletdb import EscrowRecord

WAIT_SECONDS = 10.0  # longest single wait for a new block
DEFAULT_LEAD = 1     # blocks an ESCROW_CREATE may be mined late without a pause


@dataclass
class Escrow:
    """One escrow of the follow chain (id hex, its state when created)."""

    escrow_id: str
    state: EscrowState

    @property
    def last_round(self) -> int:
        return self.state.start + self.state.l_esc - 1


@dataclass
class FollowReport:
    """What a follow run did: escrows used in order, batches, rounds with no escrow."""

    escrows: list[Escrow] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary printed at the end."""
        return {"event": "done", "escrows": [
            {"escrow_id": e.escrow_id, "start": e.state.start, "last_round": e.last_round,
             "batches": sum(1 for b in self.batches if b["escrow_id"] == e.escrow_id),
             "tickets": sum(b["count"] for b in self.batches if b["escrow_id"] == e.escrow_id)}
            for e in self.escrows],
            "rounds": len(self.batches), "gaps": self.gaps,
            "tickets": sum(b["count"] for b in self.batches),
            "accepted": sum(b["accepted"] for b in self.batches)}


def next_create_height(last_round: int, confirm_depth: int, lead: int) -> int:
    """The tip at which the next ESCROW_CREATE is sent (module docstring)."""
    return last_round - confirm_depth - 1 - lead


class Follower:
    """Issues ``count`` tickets per round to ``merchants[merchant_index]`` of a chain of
    escrows owned by wallet key ``sender``, starting with ``first`` (module docstring).

    ``deliver(tickets_chunks, escrow_id)`` sends one round's chunks and returns
    ``(tickets, summary)`` as ``ticket issue`` does; ``emit(event)`` reports each event;
    ``until_round`` (inclusive) ends the run, None runs until interrupted.
    """

    def __init__(self, wallet: WalletContext, issuer: TicketIssuer, sender: str,
                 first: Escrow, merchant_index: int, count: int, chunk: int, *,
                 deliver: Callable, emit: Callable[[dict[str, Any]], None],
                 until_round: int | None = None, lead: int = DEFAULT_LEAD,
                 fee: int = DEFAULT_TX_FEE, penalty: int | None = None,
                 url: str | None = None) -> None:
        self.wallet, self.issuer, self.sender = wallet, issuer, sender
        self.url = url  # recorded with each chunk as a pending delivery (issuer docs)
        self.merchant_index, self.count, self.chunk = merchant_index, count, chunk
        self.deliver, self.emit = deliver, emit
        self.until_round, self.lead = until_round, lead
        self.fee, self.penalty = fee, penalty
        self.params = wallet.params()
        self.seed = wallet.load_seed(sender)
        self.genesis = wallet.genesis_hash()
        self.report = FollowReport([first])
        self._pending: tuple[str, EscrowRecord] | None = None  # next ESCROW_CREATE in flight

    def run(self) -> FollowReport:
        """Follow until ``until_round`` is issued (or KeyboardInterrupt); the report.
        Raises WalletError when the next escrow cannot be created or vanishes."""
        tip: str | None = None
        done_round: int | None = None
        try:
            for _ in range(10**9):  # one pass per new block (or wait timeout)
                t = self.wallet.height()
                r = t + 1
                if self.until_round is not None and r > self.until_round:
                    break
                self._follow_pending()
                self._maybe_create(t)
                if r != done_round:
                    self._issue_round(r)
                    done_round = r
                tip = self.wallet._wait_for_block(tip, WAIT_SECONDS)
        except KeyboardInterrupt:
            pass
        return self.report

    def _maybe_create(self, t: int) -> None:
        last = self.report.escrows[-1]
        if self._pending is not None:
            return
        if self.until_round is not None and self.until_round <= last.last_round:
            return  # the escrows in hand cover the run
        if t < next_create_height(last.last_round, self.params.confirm_depth, self.lead):
            return
        s = last.state
        tx, record, least = prepare_escrow_create(
            self.wallet, self.sender, list(s.merchants), s.beta, (s.win_num, s.win_den),
            s.tkt_rate, s.l_esc, s.draw_len, self.penalty, self.fee)
        submit_escrow_create(self.wallet, tx, record)
        self._pending = (record.txid, record)
        self.emit({"event": "escrow-sent", "txid": record.txid, "height": t,
                   "after": last.escrow_id, "escrow_amount": record.escrow_amount,
                   "penalty_amount": record.penalty_amount})

    def _follow_pending(self) -> None:
        if self._pending is None:
            return
        txid, record = self._pending
        found = self.wallet.call("gettransaction", txid)
        if found is None:
            self.wallet.db.drop_pending_escrow(txid)
            raise WalletError(f"the next escrow's ESCROW_CREATE {txid} left the mempool "
                              "unmined; check the balance and run again")
        if found.get("status") != "confirmed":
            return
        eid, state, _ = confirm_escrow_create(self.wallet, record, found)
        escrow = Escrow(eid.hex(), state)
        self.report.escrows.append(escrow)
        self._pending = None
        self.emit({"event": "escrow-confirmed", "escrow_id": escrow.escrow_id,
                   "created_height": state.created_height, "start": state.start,
                   "last_round": escrow.last_round, "t_refund": state.t_refund})

    def _issue_round(self, r: int) -> None:
        live = [e for e in self.report.escrows if e.state.start <= r <= e.last_round]
        if not live:
            self.report.gaps.append(r)
            self.emit({"event": "gap", "round": r})
            return
        escrow = live[0]
        eid = bytes.fromhex(escrow.escrow_id)
        found = self.wallet.call("getescrow", escrow.escrow_id)
        state = EscrowState.from_rpc(found) if found is not None else escrow.state
        try:
            chunks = self.issuer.issue_chunks(self.seed, self.genesis, state, eid,
                                              self.merchant_index, self.count, r, self.chunk,
                                              url=self.url)
            tickets, summary = self.deliver(chunks, escrow.escrow_id)
        except IssueError as exc:
            self.emit({"event": "skipped", "round": r, "escrow_id": escrow.escrow_id,
                       "reason": str(exc)})
            return
        batch = {"event": "batch", "round": r, "escrow_id": escrow.escrow_id,
                 "count": len(tickets), "seqno_first": tickets[0].seqno,
                 "seqno_last": tickets[-1].seqno, "accepted": summary["accepted"],
                 "rejected": len(summary["rejected"]),
                 "rejected_reasons": summary["rejected_reasons"]}
        self.report.batches.append(batch)
        self.emit(batch)

