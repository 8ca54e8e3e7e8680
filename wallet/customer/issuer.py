"""The customer's ticket issuer: never reuse a sequence number (SPEC §3.2, §4, paper §4.2).

A sequence number handed out twice to two merchants is a duplicate that breaks the escrow
and burns the penalty (SPEC §8), so the issuer's one job is that this cannot happen, not
even across crashes or two processes issuing at once. Per escrow it keeps the next
unissued seqno (a high-water mark) in a LevelDB directory:

- LevelDB holds an exclusive lock on its directory, so a second process issuing from the
  same state fails at open (``IssueError``) instead of silently reusing seqnos; a JSON
  file would need its own advisory locking for the same guarantee.
- The new mark is written with ``sync=True`` (fsync) *before* any ticket is signed and
  returned; a crash afterwards only skips seqnos, which is harmless.
- A large issue is reserved chunk by chunk (``issue_chunks``), each chunk just before
  it is signed and sent, so a crash holds up at most the chunks then in hand, never the
  rest of the round.
- A chunk meant for a merchant is reserved together with a *pending delivery* record
  (same synced batch: no extra fsync) naming the merchant index and URL; it is deleted
  once the merchant has answered. Ed25519 signatures are deterministic, so the next
  ``ticket issue`` of that escrow re-signs a pending chunk to the identical tickets and
  delivers it first (a merchant that already holds some answers ``duplicate-ticket``):
  a crash loses no ticket while its round is still current (issue 6 point 5).

Key layout: ``n`` escrow_id(32) -> next unissued seqno (8 bytes, big-endian);
``p`` escrow_id(32) first(8) -> ``packb([merchant_index, last, url])`` for a pending
delivery of seqnos ``[first, last)`` (``url`` empty for tickets bound for a file).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.encoding import packb
from consensus.errors import DecodeError
from consensus.escrow import EscrowState, compute_seqno_range
from consensus.keys import public_key
from consensus.ticket import TICKET_SIZE, Ticket, sign_ticket
from wallet.durable import replace_durably
from wallet.httpclient import HttpConnections

MAX_TICKETS_PER_REQUEST = 10_000  # SPEC §13
DELIVERY_CHUNK = 1_000  # tickets reserved, signed and sent together by ``issue_chunks``
SEND_TIMEOUT = 60.0  # seconds per POST to a merchant service
_NEXT = b"n"
_PENDING = b"p"


@dataclass(frozen=True)
class PendingDelivery:
    """Seqnos ``[first, last)`` of one escrow reserved for ``merchants[merchant_index]``
    (at ``url``; empty when bound for a file) and not yet acknowledged."""

    escrow_id: bytes
    first: int
    last: int
    merchant_index: int
    url: str


class IssueError(Exception):
    """Tickets cannot be issued now; the message says why and what to do."""


class TicketSendError(Exception):
    """A merchant service could not be reached or did not answer as SPEC §13 says."""


class TicketIssuer:
    """Durable per-escrow seqno high-water marks for one customer (SPEC §3.2).

    ``state_dir`` is a LevelDB directory (created if missing). Raises ``IssueError`` if it
    is held by another process. Thread-safe within one process.
    """

    def __init__(self, state_dir: Path | str) -> None:
        import plyvel  # here, not at the top: most wallet commands never open the state

        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = plyvel.DB(str(path), create_if_missing=True)
        except plyvel.IOError as exc:
            raise IssueError(
                f"issuer state {path} is in use by another process or unreadable: {exc}"
            ) from None
        except plyvel.CorruptionError as exc:
            raise IssueError(f"issuer state {path} is corrupt: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the state directory."""
        with self._lock:
            if not self._db.closed:
                self._db.close()

    def __enter__(self) -> TicketIssuer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def next_seqno(self, escrow_id: bytes) -> int:
        """The lowest seqno never handed out for ``escrow_id`` (0 for a new escrow)."""
        raw = self._db.get(_NEXT + escrow_id)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def reserve(self, escrow: EscrowState, escrow_id: bytes, count: int,
                current_round: int, pending: tuple[int, str] | None = None) -> range:
        """Durably reserve up to ``count`` unissued seqnos of round ``current_round``.

        Returns the reserved ``range`` (never empty); the new high-water mark is fsynced
        before this returns, in one batch with a ``PendingDelivery`` record when
        ``pending = (merchant_index, url)`` is given. Raises ``IssueError`` when ``count < 1``, the escrow is
        broken, the round is outside ``[start, start + l_esc)``, or every seqno of the
        round is already issued (SPEC §3.2).
        """
        if count < 1:
            raise IssueError(f"ticket count must be at least 1, not {count}")
        if escrow.broken:
            raise IssueError("the escrow is broken; merchants accept no new tickets (SPEC §8)")
        first_round, end_round = escrow.start, escrow.start + escrow.l_esc
        if not first_round <= current_round < end_round:
            when = "has not started yet" if current_round < first_round else "has ended"
            raise IssueError(
                f"round {current_round} is outside the escrow's issuing rounds "
                f"{first_round}..{end_round - 1}: issuing {when}"
            )
        lo, hi = compute_seqno_range(escrow, current_round)
        with self._lock:
            first = max(self.next_seqno(escrow_id), lo)
            if first >= hi:
                raise IssueError(
                    f"all {escrow.tkt_rate} seqnos of round {current_round} are already "
                    f"issued; wait for round {current_round + 1}"
                )
            last = min(first + count, hi)
            with self._db.write_batch(sync=True) as batch:
                batch.put(_NEXT + escrow_id, last.to_bytes(8, "big"))
                if pending is not None:
                    index, url = pending
                    batch.put(_pending_key(escrow_id, first), packb([index, last, url]))
        return range(first, last)

    # -- pending deliveries ----------------------------------------------------------------
    def pending(self, escrow_id: bytes) -> list[PendingDelivery]:
        """The reserved, unacknowledged deliveries of ``escrow_id``, lowest seqno first."""
        import msgpack

        found = []
        with self._lock:
            for key, value in self._db.iterator(prefix=_PENDING + escrow_id):
                try:
                    index, last, url = msgpack.unpackb(value)
                    found.append(PendingDelivery(escrow_id, int.from_bytes(key[33:], "big"),
                                                 int(last), int(index), str(url)))
                except (ValueError, TypeError, msgpack.UnpackException):
                    continue  # unreadable record: its seqnos stay reserved, never reissued
        return found

    def delivered(self, escrow_id: bytes, first: int) -> None:
        """Forget the pending delivery starting at ``first`` (answered, or kept in a file).
        Not synced: if the deletion is lost in a crash the chunk is merely sent again."""
        with self._lock:
            if not self._db.closed:
                self._db.delete(_pending_key(escrow_id, first))

    @staticmethod
    def resign(seed: bytes, genesis_hash: bytes, pending: PendingDelivery) -> list[Ticket]:
        """The tickets of a pending delivery, signed again: identical bytes, since Ed25519
        signatures are deterministic (RFC 8032), so nothing new is issued."""
        return [sign_ticket(seed, genesis_hash, pending.escrow_id, pending.merchant_index, s)
                for s in range(pending.first, pending.last)]

    def issue(self, seed: bytes, genesis_hash: bytes, escrow: EscrowState, escrow_id: bytes,
              merchant_index: int, count: int, current_round: int,
              url: str | None = None) -> list[Ticket]:
        """Sign up to ``count`` fresh tickets for ``merchants[merchant_index]`` (SPEC §4).

        Seqnos come from round ``current_round``'s range ``[(r-start)·tkt_rate,
        (r-start+1)·tkt_rate)``, starting at the first unissued one; fewer than ``count``
        are returned when the round runs out. ``current_round`` is the node's best height
        + 1. Raises ``IssueError`` if ``seed`` is not the escrow owner's, the merchant
        index is out of range, or ``reserve`` refuses. With ``url`` (a merchant URL, or
        "" for a file) the chunk is recorded as a pending delivery until ``delivered``.
        """
        if public_key(seed) != escrow.owner:
            raise IssueError("this key is not the escrow's owner; its tickets would not verify")
        if not 0 <= merchant_index < len(escrow.merchants):
            raise IssueError(
                f"merchant index {merchant_index} is not in the escrow's list of "
                f"{len(escrow.merchants)} merchants"
            )
        pending = None if url is None else (merchant_index, url)
        seqnos = self.reserve(escrow, escrow_id, count, current_round, pending)
        return [sign_ticket(seed, genesis_hash, escrow_id, merchant_index, s) for s in seqnos]


    def issue_chunks(self, seed: bytes, genesis_hash: bytes, escrow: EscrowState,
                     escrow_id: bytes, merchant_index: int, count: int, current_round: int,
                     chunk: int = DELIVERY_CHUNK, url: str | None = None
                     ) -> Iterator[list[Ticket]]:
        """``issue`` in chunks of at most ``chunk`` tickets, each reserved (fsynced) only
        when the caller asks for it, i.e. once the previous one is on its way.

        Yields at least one non-empty list, up to ``count`` tickets in all; stops early
        when the round runs out. Raises ``IssueError`` like ``issue`` for the first chunk
        (a later chunk finding the round used up just ends the iteration). ``url``: as
        for ``issue``, each chunk is a pending delivery until ``delivered``.
        """
        if chunk < 1:
            raise IssueError(f"chunk must be at least 1, not {chunk}")
        remaining = count
        first = True
        while remaining > 0:
            try:
                tickets = self.issue(seed, genesis_hash, escrow, escrow_id, merchant_index,
                                     min(chunk, remaining), current_round, url)
            except IssueError:
                if first:
                    raise
                return  # someone else took the rest of the round meanwhile
            first = False
            remaining -= len(tickets)
            yield tickets
            if len(tickets) < chunk and remaining > 0:
                return  # the round ran out


def _pending_key(escrow_id: bytes, first: int) -> bytes:
    return _PENDING + escrow_id + first.to_bytes(8, "big")


def _merge(total: dict[str, Any], reply: Any, offset: int, sent: int) -> None:
    if not isinstance(reply, dict):
        raise TicketSendError(f"merchant answered {str(reply)[:200]!r}, not a JSON object")
    accepted, rejected = reply.get("accepted"), reply.get("rejected")
    if not isinstance(accepted, int) or not isinstance(rejected, list):
        raise TicketSendError(f"merchant answered {str(reply)[:200]!r} without accepted/rejected")
    total["accepted"] += accepted
    for item in rejected:
        if not isinstance(item, dict) or not isinstance(item.get("index"), int):
            raise TicketSendError(f"malformed rejection {str(item)[:200]!r}")
        if not 0 <= item["index"] < sent:
            raise TicketSendError(f"rejection index {item['index']} outside the request")
        entry = {"index": item["index"] + offset, "reason": str(item.get("reason", ""))}
        if isinstance(item.get("detail"), str):  # which term, for terms-not-met
            entry["detail"] = item["detail"][:500]
        total["rejected"].append(entry)


def send_tickets(url: str, tickets: Sequence[Ticket], *,
                 timeout: float = SEND_TIMEOUT) -> dict[str, Any]:
    """POST tickets to a merchant service's ``{url}/v1/tickets`` (SPEC §13).

    Batches larger than 10 000 tickets go in several requests over one connection.
    Returns the merged ``{"accepted": n, "rejected": [{"index": i, "reason": r}, ...]}``
    with indexes into ``tickets``. Raises ``TicketSendError`` when a request fails or the
    answer is not SPEC §13 JSON (tickets of earlier requests may already be accepted then).
    """
    with TicketSender(url, timeout=timeout) as sender:
        for offset in range(0, len(tickets), MAX_TICKETS_PER_REQUEST):
            chunk = tickets[offset:offset + MAX_TICKETS_PER_REQUEST]
            sender.merge(sender.post(chunk), offset, len(chunk))
        return sender.total


class TicketSender:
    """POSTs batches of tickets to one merchant service over keep-alive connections
    (SPEC §13), one per request in flight.

    ``post(tickets)`` sends one request (at most 10 000 tickets) and returns the decoded
    answer; it may be called from several threads at once. ``merge(reply, offset, n)``
    adds an answer to ``total``, with rejection indexes shifted by ``offset``. Raises
    ``TicketSendError`` (also at construction, for a URL that is not http(s)).
    """

    def __init__(self, url: str, *, timeout: float = SEND_TIMEOUT) -> None:
        self.endpoint = url.rstrip("/") + "/v1/tickets"
        try:
            self._connections = HttpConnections(self.endpoint, timeout)
        except ValueError as exc:
            raise TicketSendError(f"cannot reach merchant at {self.endpoint}: {exc}") from None
        self.total: dict[str, Any] = {"accepted": 0, "rejected": []}

    def post(self, tickets: Sequence[Ticket]) -> Any:
        """One SPEC §13 request; the JSON answer of an HTTP 200."""
        if len(tickets) > MAX_TICKETS_PER_REQUEST:
            raise ValueError(f"at most {MAX_TICKETS_PER_REQUEST} tickets per request")
        return _post_chunk(self._connections, self.endpoint, tickets)

    def merge(self, reply: Any, offset: int, count: int) -> None:
        """Check ``reply`` to a request of ``count`` tickets and add it to ``total``."""
        _merge(self.total, reply, offset, count)

    def close(self) -> None:
        """Close the connections."""
        self._connections.close()

    def __enter__(self) -> TicketSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _post_chunk(connections: HttpConnections, endpoint: str, chunk: Sequence[Ticket]) -> Any:
    """One SPEC §13 request; the decoded JSON answer of an HTTP 200."""
    body = b"".join(t.encode() for t in chunk)
    try:
        status, content = connections.post(body, {"Content-Type": "application/octet-stream"})
    except (OSError) as exc:
        raise TicketSendError(f"cannot reach merchant at {endpoint}: {exc}") from None
    try:
        reply = json.loads(content)
    except ValueError:
        reply = None
    if status != 200:
        detail = (reply.get("error") if isinstance(reply, dict)
                  else content[:200].decode("utf-8", "replace"))
        raise TicketSendError(f"merchant at {endpoint} answered HTTP {status}: {detail}")
    return reply


def write_tickets(path: Path | str, tickets: Sequence[Ticket]) -> None:
    """Write tickets as concatenated 107-byte records (SPEC §4), atomically and fsynced."""
    replace_durably(Path(path), b"".join(t.encode() for t in tickets), mode=0o644)


def read_tickets(path: Path | str) -> list[Ticket]:
    """Read a file of concatenated 107-byte tickets.

    Raises ``ValueError`` if the size is not a multiple of 107 or a record does not decode.
    """
    data = Path(path).read_bytes()
    if len(data) % TICKET_SIZE:
        raise ValueError(f"{path}: {len(data)} bytes is not a multiple of {TICKET_SIZE}")
    tickets = []
    for i in range(0, len(data), TICKET_SIZE):
        try:
            tickets.append(Ticket.decode(data[i:i + TICKET_SIZE]))
        except DecodeError as exc:
            raise ValueError(f"{path}: ticket {i // TICKET_SIZE}: {exc}") from None
    return tickets
