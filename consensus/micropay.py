"""MICROPAY escrows, natively (SPEC §15; Pass & shelat MICROPAY1, paper §3.3).

The sequential comparison scheme: one MP escrow pays **at most one** winning ticket.

- ``MP_ESCROW [amount, win_bits, refund_height]`` locks ``amount`` until ``refund_height``;
  ``mp_escrow_id = H(b"mp-escrow", txid)``.
- Off chain the payee commits to a random 16-byte ``r1`` with ``c = H(b"mp-commit", r1)``;
  the payer answers with ``MpTicket [mp_escrow_id, c, r2, ticket_sig]``.
- ``MP_CLAIM [mp_escrow_id, r1, r2, ticket_sig]`` pays a winner ``amount - fee`` and
  deletes the escrow; an unclaimed escrow is refunded after block ``refund_height``.

State keys (beside those of ``consensus.state``):

- ``m`` + mp_escrow_id(32)                 -> ``MpEscrowState``
- ``n`` + refund_height(u64) + mp_escrow_id -> ``b""`` (MP escrows refunded at that height)

This module does not import ``consensus.tx`` or ``consensus.transition`` (they import it);
``ctx`` is a ``consensus.transition.TxContext`` and ``tx`` a ``consensus.tx.Tx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Iterator

from consensus import keys
from consensus.address import decode_address, encode_address
from consensus.encoding import expect_bytes, expect_int, expect_list, packb, unpackb_canonical
from consensus.errors import ConsensusError
from consensus.hashing import tagged_hash
from consensus.params import ChainParams
from consensus.state import (StateView, credit, debit_account, delete_height_entry,
                             get_height_entries, put_height_entry)

if TYPE_CHECKING:  # pragma: no cover - type hints only (tx.py and transition.py import us)
    from consensus.transition import TxContext
    from consensus.tx import Tx

R_SIZE = 16          # bytes of r1 and r2 (128-bit randomness, paper §3.3)
MAX_WIN_BITS = 32    # p = 2^-win_bits, 1 <= win_bits <= 32
_MP_ESCROW, _MP_REFUND = b"m", b"n"


# ---- transaction bodies ----------------------------------------------------------------

@dataclass(frozen=True)
class MpEscrowBody:
    """Body of MP_ESCROW (kind 5, SPEC §15)."""

    amount: int         # units locked; the face value of the one winning ticket
    win_bits: int       # p = 2^-win_bits
    refund_height: int  # block after whose transactions an unclaimed escrow is refunded

    def to_obj(self) -> list:
        """The msgpack array ``[amount, win_bits, refund_height]``."""
        return [self.amount, self.win_bits, self.refund_height]

    @classmethod
    def from_obj(cls, obj: Any) -> "MpEscrowBody":
        """Check the shape (3 integers); raises ``DecodeError``. Values are checked by
        ``verify_mp_escrow_params``."""
        amount, win_bits, refund_height = expect_list(obj, 3, "mp_escrow")
        return cls(expect_int(amount, "mp_escrow.amount"),
                   expect_int(win_bits, "mp_escrow.win_bits"),
                   expect_int(refund_height, "mp_escrow.refund_height"))


@dataclass(frozen=True)
class MpClaimBody:
    """Body of MP_CLAIM (kind 6, SPEC §15)."""

    mp_escrow_id: bytes  # 32 bytes
    r1: bytes            # 16 bytes, the payee's secret behind c
    r2: bytes            # 16 bytes, the payer's randomness
    ticket_sig: bytes    # 64 bytes, the escrow owner's signature (compute_mp_ticket_message)

    def to_obj(self) -> list:
        """The msgpack array ``[mp_escrow_id, r1, r2, ticket_sig]``."""
        return [self.mp_escrow_id, self.r1, self.r2, self.ticket_sig]

    @classmethod
    def from_obj(cls, obj: Any) -> "MpClaimBody":
        """Check the shape (bin of 32, 16, 16, 64 bytes); raises ``DecodeError``."""
        eid, r1, r2, sig = expect_list(obj, 4, "mp_claim")
        return cls(expect_bytes(eid, 32, "mp_claim.mp_escrow_id"),
                   expect_bytes(r1, R_SIZE, "mp_claim.r1"),
                   expect_bytes(r2, R_SIZE, "mp_claim.r2"),
                   expect_bytes(sig, 64, "mp_claim.ticket_sig"))


# ---- state -----------------------------------------------------------------------------

@dataclass(frozen=True)
class MpEscrowState:
    """An MP escrow's on-chain state (SPEC §15)."""

    owner: bytes        # 32-byte payer key; signs tickets, receives the refund
    amount: int         # units paid to the one winner
    win_bits: int       # p = 2^-win_bits
    refund_height: int  # refunded after the transactions of this block

    def to_obj(self) -> list:
        """The msgpack array stored in the state."""
        return [self.owner, self.amount, self.win_bits, self.refund_height]

    def encode(self) -> bytes:
        """Canonical bytes."""
        return packb(self.to_obj())

    @classmethod
    def decode(cls, data: bytes) -> "MpEscrowState":
        """Inverse of ``encode``; raises ``DecodeError``."""
        owner, amount, win_bits, refund_height = expect_list(unpackb_canonical(data), 4,
                                                             "mp_escrow state")
        return cls(expect_bytes(owner, 32, "owner"), expect_int(amount, "amount"),
                   expect_int(win_bits, "win_bits"), expect_int(refund_height, "refund_height"))

    def to_json(self) -> dict:
        """JSON-friendly dict for ``getmpescrow`` (SPEC §12): owner as bech32m."""
        return {"owner": encode_address(self.owner), "amount": self.amount,
                "win_bits": self.win_bits, "refund_height": self.refund_height}

    @classmethod
    def from_rpc(cls, d: dict) -> "MpEscrowState":
        """Parse the ``getmpescrow`` result (owner bech32m or hex); raises
        ``KeyError``/``ValueError``."""
        return cls(decode_address(d["owner"]), int(d["amount"]), int(d["win_bits"]),
                   int(d["refund_height"]))


def compute_mp_escrow_id(txid: bytes) -> bytes:
    """``H(b"mp-escrow", txid)`` (SPEC §15): fixed by the payer's transaction alone, so a
    wallet knows the id before the escrow confirms."""
    return tagged_hash(b"mp-escrow", txid)


def get_mp_escrow(view: StateView, mp_escrow_id: bytes) -> MpEscrowState | None:
    """The MP escrow ``mp_escrow_id`` or ``None``."""
    raw = view.get(_MP_ESCROW + mp_escrow_id)
    return None if raw is None else MpEscrowState.decode(raw)


def put_mp_escrow(view: StateView, mp_escrow_id: bytes, escrow: MpEscrowState) -> None:
    """Store a new MP escrow and index it under its ``refund_height``."""
    view.put(_MP_ESCROW + mp_escrow_id, escrow.encode())
    put_height_entry(view, _MP_REFUND, escrow.refund_height, mp_escrow_id)


def delete_mp_escrow(view: StateView, mp_escrow_id: bytes) -> None:
    """Remove an MP escrow and its refund index entry (undo data keeps both)."""
    escrow = get_mp_escrow(view, mp_escrow_id)
    if escrow is not None:
        delete_height_entry(view, _MP_REFUND, escrow.refund_height, mp_escrow_id)
    view.delete(_MP_ESCROW + mp_escrow_id)


def get_mp_refunds_at(view: StateView, height: int) -> list[bytes]:
    """Ids of MP escrows with ``refund_height == height``, in id order."""
    return get_height_entries(view, _MP_REFUND, height)


def iter_mp_escrows(view: StateView) -> Iterator[tuple[bytes, MpEscrowState]]:
    """Every live MP escrow in id order."""
    for key, raw in view.iter_prefix(_MP_ESCROW):
        yield key[1:], MpEscrowState.decode(raw)


# ---- off-chain tickets (paper §3.3) ------------------------------------------------------

def compute_mp_commitment(r1: bytes) -> bytes:
    """The payee's commitment ``c = H(b"mp-commit", r1)`` (SPEC §15); 32 bytes."""
    return tagged_hash(b"mp-commit", r1)


def compute_mp_ticket_message(genesis_hash: bytes, mp_escrow_id: bytes, c: bytes, r2: bytes,
                              payee: bytes) -> bytes:
    """``H(b"mp-ticket", genesis_hash || mp_escrow_id || c || r2 || payee)`` — what the
    escrow owner signs (SPEC §15)."""
    return tagged_hash(b"mp-ticket", genesis_hash + mp_escrow_id + c + r2 + payee)


def sign_mp_ticket(seed: bytes, genesis_hash: bytes, mp_escrow_id: bytes, c: bytes,
                   r2: bytes, payee: bytes) -> "MpTicket":
    """The payer's ticket for commitment ``c`` to ``payee``, signed with ``seed``."""
    sig = keys.sign(seed, compute_mp_ticket_message(genesis_hash, mp_escrow_id, c, r2, payee))
    return MpTicket(mp_escrow_id, c, r2, sig)


def verify_mp_ticket_signature(owner: bytes, genesis_hash: bytes, mp_escrow_id: bytes,
                               c: bytes, r2: bytes, payee: bytes, ticket_sig: bytes) -> bool:
    """True iff ``ticket_sig`` is ``owner``'s signature of the ticket message; never raises."""
    return keys.verify(owner, compute_mp_ticket_message(genesis_hash, mp_escrow_id, c, r2,
                                                        payee), ticket_sig)


def is_mp_winning(r1: bytes, r2: bytes, win_bits: int) -> bool:
    """SPEC §15: the low ``win_bits`` bits of ``int(r1 XOR r2)`` (big-endian) are zero."""
    x = int.from_bytes(bytes(a ^ b for a, b in zip(r1, r2, strict=True)), "big")
    return x & ((1 << win_bits) - 1) == 0


@dataclass(frozen=True)
class MpTicket:
    """A MICROPAY ticket as the payer hands it to the payee (SPEC §15, off chain)."""

    mp_escrow_id: bytes  # 32 bytes
    c: bytes             # 32 bytes, the payee's commitment H(b"mp-commit", r1)
    r2: bytes            # 16 bytes, the payer's randomness
    ticket_sig: bytes    # 64 bytes, by the escrow owner

    def to_obj(self) -> list:
        """The msgpack array ``[mp_escrow_id, c, r2, ticket_sig]``."""
        return [self.mp_escrow_id, self.c, self.r2, self.ticket_sig]

    def encode(self) -> bytes:
        """Canonical bytes."""
        return packb(self.to_obj())

    @classmethod
    def decode(cls, data: bytes) -> "MpTicket":
        """Strictly decode; raises ``DecodeError``."""
        eid, c, r2, sig = expect_list(unpackb_canonical(data), 4, "mp_ticket")
        return cls(expect_bytes(eid, 32, "mp_escrow_id"), expect_bytes(c, 32, "c"),
                   expect_bytes(r2, R_SIZE, "r2"), expect_bytes(sig, 64, "ticket_sig"))

    def claim_body(self, r1: bytes) -> MpClaimBody:
        """The MP_CLAIM body once the payee reveals ``r1``."""
        return MpClaimBody(self.mp_escrow_id, r1, self.r2, self.ticket_sig)


# ---- MP_ESCROW ---------------------------------------------------------------------------

def verify_mp_escrow_params(params: ChainParams, height: int, body: MpEscrowBody) -> None:
    """``amount > 0``, ``1 <= win_bits <= 32``, ``height < refund_height <= height +
    max_escrow_rounds`` (``bad-mp-params``, SPEC §15)."""
    if body.amount <= 0:
        raise ConsensusError("bad-mp-params", "amount must be positive")
    if not 1 <= body.win_bits <= MAX_WIN_BITS:
        raise ConsensusError("bad-mp-params", f"win_bits {body.win_bits} not in 1..32")
    if not height < body.refund_height <= height + params.max_escrow_rounds:
        raise ConsensusError("bad-mp-params", f"refund_height {body.refund_height} not in "
                             f"{height + 1}..{height + params.max_escrow_rounds}")


def process_mp_escrow(ctx: "TxContext", view: StateView, tx: "Tx") -> bytes:
    """MP_ESCROW (SPEC §15): fee (rule 5), params, then ``amount`` from the balance
    (``insufficient-funds``); nonce += 1. Returns the new ``mp_escrow_id``."""
    debit_account(view, tx.sender, tx.fee)
    body: MpEscrowBody = tx.body
    verify_mp_escrow_params(ctx.params, ctx.height, body)
    debit_account(view, tx.sender, body.amount, bump_nonce=True)
    mp_escrow_id = compute_mp_escrow_id(tx.txid())
    put_mp_escrow(view, mp_escrow_id, MpEscrowState(tx.sender, body.amount, body.win_bits,
                                                    body.refund_height))
    return mp_escrow_id


# ---- MP_CLAIM ----------------------------------------------------------------------------

def verify_mp_claim(ctx: "TxContext", view: StateView, tx: "Tx") -> MpEscrowState:
    """SPEC §15 MP_CLAIM checks in order; returns the escrow. Raises ``unknown-mp-escrow``,
    ``mp-escrow-expired``, ``bad-ticket-signature``, ``ticket-not-winning``,
    ``fee-exceeds-payout``."""
    body: MpClaimBody = tx.body
    escrow = get_mp_escrow(view, body.mp_escrow_id)
    if escrow is None:
        raise ConsensusError("unknown-mp-escrow")
    if ctx.height >= escrow.refund_height:
        raise ConsensusError("mp-escrow-expired", f"height {ctx.height} >= refund_height "
                             f"{escrow.refund_height}")
    c = compute_mp_commitment(body.r1)
    if not verify_mp_ticket_signature(escrow.owner, ctx.genesis_hash, body.mp_escrow_id, c,
                                      body.r2, tx.sender, body.ticket_sig):
        raise ConsensusError("bad-ticket-signature")
    if not is_mp_winning(body.r1, body.r2, escrow.win_bits):
        raise ConsensusError("ticket-not-winning")
    if tx.fee > escrow.amount:
        raise ConsensusError("fee-exceeds-payout")
    return escrow


def process_mp_claim(ctx: "TxContext", view: StateView, tx: "Tx") -> None:
    """MP_CLAIM (SPEC §15): pay the winner ``amount - fee`` and delete the escrow, so a
    second winner of it finds ``unknown-mp-escrow``."""
    escrow = verify_mp_claim(ctx, view, tx)
    delete_mp_escrow(view, tx.body.mp_escrow_id)
    credit(view, tx.sender, escrow.amount - tx.fee)


# ---- refunds -----------------------------------------------------------------------------

def process_mp_refunds(ctx: "TxContext", view: StateView) -> None:
    """SPEC §15: after block ``refund_height``'s transactions (and §9's refunds), each
    unclaimed MP escrow returns ``amount`` to its owner and is deleted."""
    for mp_escrow_id in get_mp_refunds_at(view, ctx.height):
        escrow = get_mp_escrow(view, mp_escrow_id)
        credit(view, escrow.owner, escrow.amount)
        delete_mp_escrow(view, mp_escrow_id)


# ---- helpers for wallets (off-chain policy built on the consensus rules) ---------------------

def compute_mp_claim_deadline(escrow: MpEscrowState) -> int:
    """The last height whose block may carry an MP_CLAIM of ``escrow``: ``refund_height - 1``
    (SPEC §15: including height ``< refund_height``)."""
    return escrow.refund_height - 1


def compute_mp_expected_value(amount: int, win_bits: int) -> Fraction:
    """A ticket's expected value ``amount · 2^-win_bits`` in units, exact (SPEC §15)."""
    return Fraction(amount, 1 << win_bits)


def verify_mp_ticket_for_payee(genesis_hash: bytes, escrow: MpEscrowState | None,
                               ticket: MpTicket, payee: bytes, commitment: bytes,
                               current_round: int, margin: int = 0) -> None:
    """What a payee checks before accepting ``ticket`` for the ``commitment`` it handed out
    (SPEC §15, wallet policy): the escrow exists (``unknown-mp-escrow``); a claim sent now
    could still be included: ``current_round + margin <= refund_height - 1``
    (``mp-escrow-expired``); the ticket answers this commitment (``wrong-commitment``);
    the owner's signature binds this payee (``bad-ticket-signature``).

    ``current_round`` is the payee's best height + 1 (SPEC §0); ``margin`` is how many
    blocks the payee allows for its MP_CLAIM to confirm. Raises ``ConsensusError``.
    """
    if escrow is None:
        raise ConsensusError("unknown-mp-escrow")
    if current_round + margin > compute_mp_claim_deadline(escrow):
        raise ConsensusError("mp-escrow-expired", f"claimable until height "
                             f"{compute_mp_claim_deadline(escrow)}")
    if ticket.c != commitment:
        raise ConsensusError("wrong-commitment")
    if not verify_mp_ticket_signature(escrow.owner, genesis_hash, ticket.mp_escrow_id,
                                      ticket.c, ticket.r2, payee, ticket.ticket_sig):
        raise ConsensusError("bad-ticket-signature")
