"""Mempool replacement by fee for nonce-0 claims (DESIGN "Replace-by-fee and escrow roll-over").

REDEEM, CHANNEL_CLOSE and CHANNEL_CHEAT carry nonce 0 (SPEC §2 rule 4): their replay
protection is the escrow or channel state, so a second claim on the same tickets or the
same channel is not a nonce conflict but a state conflict (``ticket-already-redeemed``,
``unknown-channel``) with the pooled one. This module finds those conflicts and judges a
replacement, BIP125-like but simpler:

- **conflicts**: for a REDEEM, the pooled REDEEMs of the same sender that redeem any of
  its ``(escrow_id, seqno)``; for a CHANNEL_CLOSE or CHANNEL_CHEAT, the pooled
  CHANNEL_CLOSE / CHANNEL_CHEAT of the same channel (so a payee's CHANNEL_CHEAT replaces
  its own pooled CHANNEL_CLOSE after an equivocation). At most ``MAX_CONFLICTS``.
- **fee**: the newcomer pays at least the conflicts' fees together plus its own size at
  ``INCREMENTAL_FEERATE`` (so every replacement pays for its relay), and a strictly higher
  fee per byte than each conflict.

A failed rule is a ``PolicyError``: ``too-many-replacements`` or ``insufficient-fee``.
Fees stay bounded by the payout (SPEC §7, §16: ``fee-exceeds-payout``), so a chain of
replacements on one claim is finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from consensus.channel import _CHANNEL
from consensus.state import redeemed_key
from consensus.tx import CHANNEL_CHEAT, CHANNEL_CLOSE, REDEEM, Tx

if TYPE_CHECKING:
    from node.mempool import MempoolEntry

MAX_CONFLICTS = 100        # pooled transactions one newcomer may replace (BIP125 rule 5)
INCREMENTAL_FEERATE = 1    # units per byte a replacement adds on top (BIP125 rule 4)
CHANNEL_KINDS = frozenset({CHANNEL_CLOSE, CHANNEL_CHEAT})
# The reject reason a claim gets when a pooled claim already took what it claims.
CONFLICT_REASONS = {REDEEM: "ticket-already-redeemed", CHANNEL_CLOSE: "unknown-channel",
                    CHANNEL_CHEAT: "unknown-channel"}


def conflict_keys(tx: Tx) -> list[bytes]:
    """State keys through which a pooled claim conflicts with ``tx``: the redeemed record
    of each ticket of a REDEEM, the channel of a CHANNEL_CLOSE / CHANNEL_CHEAT; [] for
    other kinds."""
    if tx.kind == REDEEM:
        return [redeemed_key(t.escrow_id, t.seqno) for t in tx.tickets()]
    if tx.kind in CHANNEL_KINDS:
        return [_CHANNEL + tx.body.channel_id]
    return []


def find_conflicts(tx: Tx, reason: str,
                   touchers: Mapping[bytes, Mapping["MempoolEntry", None]]) -> list["MempoolEntry"]:
    """Pooled entries ``tx`` would replace, given the reject ``reason`` it got on top of
    the pool and ``touchers`` (state key → entries that touched it). [] when ``reason``
    is not a conflict reason of ``tx``'s kind or no pooled claim explains it (the chain,
    not the pool, already holds the claim)."""
    if CONFLICT_REASONS.get(tx.kind) != reason:
        return []
    kinds = CHANNEL_KINDS if tx.kind in CHANNEL_KINDS else {REDEEM}
    found: dict["MempoolEntry", None] = {}
    for key in conflict_keys(tx):
        for entry in touchers.get(key, ()):
            if entry.tx.kind in kinds and entry.tx.sender == tx.sender:
                found[entry] = None
    return list(found)


def check_replacement(tx: Tx, size: int, conflicts: list["MempoolEntry"]) -> None:
    """Raise ``PolicyError`` unless ``tx`` (``size`` encoded bytes) may replace
    ``conflicts`` (non-empty) under the rule of the module docstring."""
    from node.mempool import PolicyError

    if len(conflicts) > MAX_CONFLICTS:
        raise PolicyError("too-many-replacements")
    replaced_fees = sum(e.tx.fee for e in conflicts)
    if tx.fee < replaced_fees + INCREMENTAL_FEERATE * size:
        raise PolicyError("insufficient-fee")
    if any(tx.fee * e.size <= e.tx.fee * size for e in conflicts):  # feerate, exactly
        raise PolicyError("insufficient-fee")
