"""JSON-RPC methods of the ticket watch (issue 8 point 2; DESIGN "Ticket watch between
merchants"): a merchant subscribes to its escrows, announces the tickets it accepts and
waits for conflicts (two tickets of one seqno, or one with seqno ≥ N) to prove.

``watchescrow``, ``announcetickets``, ``waitforconflicts``, ``getconflicts`` and
``getwatchinfo`` over ``node.ticketwatch.TicketWatch``; ``table()`` gives the name →
bound method entries ``make_methods`` merges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from node.ticketwatch import DEFAULT_LEASE_SECONDS, TicketWatch
from p2p.messages import MAX_WATCH_ESCROWS

if TYPE_CHECKING:
    from node.node import Node

# Tickets one announcetickets call may carry: one SPEC §13 request's worth, so a merchant
# announces what one request accepted in one call (peers get tktann frames of ≤ 1000).
MAX_ANNOUNCE_TICKETS = 10_000


def _hash(text: object, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{what} must be 64 hex digits")
    return raw


def _escrow_ids(value: object, what: str = "escrow_ids") -> list[bytes]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_WATCH_ESCROWS:
        raise ValueError(f"{what} must be a list of at most {MAX_WATCH_ESCROWS} escrow ids")
    return [_hash(v, "escrow_id") for v in value]


class WatchMethods:
    """The ticket-watch RPC methods bound to ``node.ticket_watch``."""

    def __init__(self, node: "Node") -> None:
        self.node = node

    @property
    def watch(self) -> TicketWatch:
        return self.node.ticket_watch

    def table(self) -> dict[str, Callable]:
        """``{name: bound method}`` for the JSON-RPC dispatcher."""
        return {f.__name__: f for f in (self.watchescrow, self.announcetickets,
                                        self.waitforconflicts, self.getconflicts,
                                        self.getwatchinfo)}

    def watchescrow(self, escrow_ids: list | str,
                    lease_seconds: float = DEFAULT_LEASE_SECONDS) -> dict:
        """Subscribe this node (for its merchants) to the tickets of ``escrow_ids`` (≤ 256
        hex ids) for ``lease_seconds`` (default 600, ≤ 3600; 0 unsubscribes); renew
        before it ends. ``{watching: [ids], lease_seconds}``. -8 beyond 1024 escrows."""
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)):
            raise ValueError("lease_seconds must be a number")
        ids = self.watch.watch_local(_escrow_ids(escrow_ids), float(lease_seconds))
        return {"watching": [eid.hex() for eid in ids], "lease_seconds": lease_seconds}

    async def announcetickets(self, escrow_id: str, tickets: list) -> dict:
        """Announce tickets a merchant accepted (≤ 10 000 hex 107-byte tickets of
        ``escrow_id``, one SPEC §13 request's worth) to the merchants watching it, through
        the peers (in ``tktann`` frames of ≤ 1000); the node checks each signature before
        relaying. ``{new, known, ignored, invalid, conflicts: [...]}`` — conflicts this
        batch completed (each as in ``getconflicts``)."""
        eid = _hash(escrow_id, "escrow_id")
        if not isinstance(tickets, list) or len(tickets) > MAX_ANNOUNCE_TICKETS:
            raise ValueError(f"tickets must be a list of at most {MAX_ANNOUNCE_TICKETS}")
        raws = []
        for text in tickets:
            try:
                raws.append(bytes.fromhex(text))
            except (ValueError, TypeError):
                raise ValueError("each ticket must be hex") from None
        return (await self.watch.announce_local(eid, raws)).to_json()

    async def waitforconflicts(self, after: int = 0, timeout: int = 0,
                               escrow_ids: list | None = None) -> dict:
        """Wait until a conflict with id > ``after`` exists (of ``escrow_ids`` only, when
        given) or ``timeout`` ms pass (0 = no timeout, capped at 600 s).
        ``{next, conflicts: [{id, escrow_id, seqno, kind, tickets, source}]}``; pass the
        largest id seen as the next ``after``; ``next`` is the id the next conflict gets."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError("after must be an integer >= 0")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise ValueError("timeout must be >= 0 (milliseconds, 0 = no timeout)")
        wanted = None if escrow_ids is None else set(_escrow_ids(escrow_ids))
        found = await self.watch.wait_conflicts(after, timeout / 1000, wanted)
        return {"next": self.watch.next_id, "conflicts": [c.to_json() for c in found]}

    def getconflicts(self, after: int = 0, escrow_ids: list | None = None) -> dict:
        """``waitforconflicts`` without waiting."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError("after must be an integer >= 0")
        wanted = None if escrow_ids is None else set(_escrow_ids(escrow_ids))
        return {"next": self.watch.next_id,
                "conflicts": [c.to_json() for c in self.watch.conflicts_after(after, wanted)]}

    def getwatchinfo(self) -> dict:
        """``{local, peers, tracked_tickets, escrows_tracked, conflicts, next_conflict_id}``:
        what the ticket watch holds (for operators and tests)."""
        return self.watch.info()
