"""Payment channels, natively (SPEC §16; Spilman / Bloomer–Nishimura, penalised
multi-point-of-sale channels after Das–Tripathi).

One payer, one payee, many off-chain vouchers, two transactions on chain:

- ``CHANNEL_OPEN [payee, deposit, penalty, expiry_height]`` locks ``deposit + penalty``;
  ``channel_id = H(b"channel", txid)``.
- Off chain the payer signs ``Voucher [k, cumulative, sig]``: payment number ``k >= 1``,
  total paid so far ``cumulative``.
- ``CHANNEL_CLOSE [channel_id, voucher]`` splits the deposit; ``CHANNEL_CHEAT
  [channel_id, voucher_a, voucher_b]`` proves an equivocation (same ``k``, different
  ``cumulative``) and gives deposit and penalty to the payee; an open channel expires
  after block ``expiry_height`` and returns both to the payer.

State keys (beside those of ``consensus.state``):

- ``c`` + channel_id(32)                     -> ``ChannelState``
- ``d`` + expiry_height(u64) + channel_id    -> ``b""`` (channels expiring at that height)

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

_CHANNEL, _EXPIRY = b"c", b"d"


# ---- vouchers (off chain, carried by CHANNEL_CLOSE / CHANNEL_CHEAT) ----------------------

@dataclass(frozen=True)
class Voucher:
    """A payer's signed channel state ``[k, cumulative, sig]`` (SPEC §16)."""

    k: int           # payment number on this channel, >= 1 (checked by consensus, not decoding)
    cumulative: int  # units paid so far, <= deposit for a CHANNEL_CLOSE
    sig: bytes       # 64 bytes, by the payer over compute_voucher_message

    def to_obj(self) -> list:
        """The msgpack array ``[k, cumulative, sig]``."""
        return [self.k, self.cumulative, self.sig]

    def encode(self) -> bytes:
        """Canonical bytes (how wallets pass vouchers around)."""
        return packb(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> "Voucher":
        """Check the shape (int, int, 64-byte bin); raises ``DecodeError``."""
        k, cumulative, sig = expect_list(obj, 3, "voucher")
        return cls(expect_int(k, "voucher.k"), expect_int(cumulative, "voucher.cumulative"),
                   expect_bytes(sig, 64, "voucher.sig"))

    @classmethod
    def decode(cls, data: bytes) -> "Voucher":
        """Strictly decode canonical bytes; raises ``DecodeError``."""
        return cls.from_obj(unpackb_canonical(data))


def compute_voucher_message(genesis_hash: bytes, channel_id: bytes, k: int,
                            cumulative: int) -> bytes:
    """``H(b"voucher", genesis_hash || channel_id || packb([k, cumulative]))`` (SPEC §16)."""
    return tagged_hash(b"voucher", genesis_hash + channel_id + packb([k, cumulative]))


def sign_voucher(seed: bytes, genesis_hash: bytes, channel_id: bytes, k: int,
                 cumulative: int) -> Voucher:
    """The payer's voucher number ``k`` for a running total of ``cumulative`` units."""
    return Voucher(k, cumulative,
                   keys.sign(seed, compute_voucher_message(genesis_hash, channel_id, k,
                                                           cumulative)))


def verify_voucher_signature(payer: bytes, genesis_hash: bytes, channel_id: bytes,
                             voucher: Voucher) -> bool:
    """True iff ``voucher.sig`` is ``payer``'s signature of its message; never raises."""
    return keys.verify(payer, compute_voucher_message(genesis_hash, channel_id, voucher.k,
                                                      voucher.cumulative), voucher.sig)


def is_equivocation(voucher_a: Voucher, voucher_b: Voucher) -> bool:
    """Same ``k >= 1``, different ``cumulative`` (SPEC §16); signatures not checked here."""
    return (voucher_a.k == voucher_b.k and voucher_a.k >= 1
            and voucher_a.cumulative != voucher_b.cumulative)


# ---- transaction bodies ----------------------------------------------------------------

@dataclass(frozen=True)
class ChannelOpenBody:
    """Body of CHANNEL_OPEN (kind 7, SPEC §16)."""

    payee: bytes        # 32-byte key of the payee (all its points of sale)
    deposit: int        # units the payer may pay through the channel
    penalty: int        # units lost to the payee on a proven equivocation (0 = Spilman)
    expiry_height: int  # block after whose transactions an open channel returns to the payer

    def to_obj(self) -> list:
        """The msgpack array ``[payee, deposit, penalty, expiry_height]``."""
        return [self.payee, self.deposit, self.penalty, self.expiry_height]

    @classmethod
    def from_obj(cls, obj: Any) -> "ChannelOpenBody":
        """Check the shape; raises ``DecodeError``. Values: ``verify_channel_open_params``."""
        payee, deposit, penalty, expiry_height = expect_list(obj, 4, "channel_open")
        return cls(expect_bytes(payee, 32, "channel_open.payee"),
                   expect_int(deposit, "channel_open.deposit"),
                   expect_int(penalty, "channel_open.penalty"),
                   expect_int(expiry_height, "channel_open.expiry_height"))


@dataclass(frozen=True)
class ChannelCloseBody:
    """Body of CHANNEL_CLOSE (kind 8, SPEC §16)."""

    channel_id: bytes  # 32 bytes
    voucher: Voucher   # the best voucher the payee holds

    def to_obj(self) -> list:
        """The msgpack array ``[channel_id, [k, cumulative, sig]]``."""
        return [self.channel_id, self.voucher.to_obj()]

    @classmethod
    def from_obj(cls, obj: Any) -> "ChannelCloseBody":
        """Check the shape; raises ``DecodeError``."""
        channel_id, voucher = expect_list(obj, 2, "channel_close")
        return cls(expect_bytes(channel_id, 32, "channel_close.channel_id"),
                   Voucher.from_obj(voucher))


@dataclass(frozen=True)
class ChannelCheatBody:
    """Body of CHANNEL_CHEAT (kind 9, SPEC §16): two vouchers with the same ``k``."""

    channel_id: bytes  # 32 bytes
    voucher_a: Voucher
    voucher_b: Voucher

    def to_obj(self) -> list:
        """The msgpack array ``[channel_id, voucher_a, voucher_b]``."""
        return [self.channel_id, self.voucher_a.to_obj(), self.voucher_b.to_obj()]

    @classmethod
    def from_obj(cls, obj: Any) -> "ChannelCheatBody":
        """Check the shape; raises ``DecodeError``."""
        channel_id, voucher_a, voucher_b = expect_list(obj, 3, "channel_cheat")
        return cls(expect_bytes(channel_id, 32, "channel_cheat.channel_id"),
                   Voucher.from_obj(voucher_a), Voucher.from_obj(voucher_b))


# ---- state -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelState:
    """An open channel's on-chain state (SPEC §16)."""

    payer: bytes        # 32-byte key; signs vouchers, receives the remainder
    payee: bytes        # 32-byte key; the only sender of CHANNEL_CLOSE / CHANNEL_CHEAT
    deposit: int        # units
    penalty: int        # units
    expiry_height: int  # returned to the payer after the transactions of this block

    def to_obj(self) -> list:
        """The msgpack array stored in the state."""
        return [self.payer, self.payee, self.deposit, self.penalty, self.expiry_height]

    def encode(self) -> bytes:
        """Canonical bytes."""
        return packb(self.to_obj())

    @classmethod
    def decode(cls, data: bytes) -> "ChannelState":
        """Inverse of ``encode``; raises ``DecodeError``."""
        payer, payee, deposit, penalty, expiry = expect_list(unpackb_canonical(data), 5,
                                                             "channel state")
        return cls(expect_bytes(payer, 32, "payer"), expect_bytes(payee, 32, "payee"),
                   expect_int(deposit, "deposit"), expect_int(penalty, "penalty"),
                   expect_int(expiry, "expiry_height"))

    def to_json(self) -> dict:
        """JSON-friendly dict for ``getchannel`` (SPEC §12): addresses as bech32m."""
        return {"payer": encode_address(self.payer), "payee": encode_address(self.payee),
                "deposit": self.deposit, "penalty": self.penalty,
                "expiry_height": self.expiry_height}

    @classmethod
    def from_rpc(cls, d: dict) -> "ChannelState":
        """Parse the ``getchannel`` result (addresses bech32m or hex); raises
        ``KeyError``/``ValueError``."""
        return cls(decode_address(d["payer"]), decode_address(d["payee"]), int(d["deposit"]),
                   int(d["penalty"]), int(d["expiry_height"]))


def compute_channel_id(txid: bytes) -> bytes:
    """``H(b"channel", txid)`` (SPEC §16): known to the payer before the channel confirms."""
    return tagged_hash(b"channel", txid)


def get_channel(view: StateView, channel_id: bytes) -> ChannelState | None:
    """The open channel ``channel_id`` or ``None``."""
    raw = view.get(_CHANNEL + channel_id)
    return None if raw is None else ChannelState.decode(raw)


def put_channel(view: StateView, channel_id: bytes, channel: ChannelState) -> None:
    """Store a new channel and index it under its ``expiry_height``."""
    view.put(_CHANNEL + channel_id, channel.encode())
    put_height_entry(view, _EXPIRY, channel.expiry_height, channel_id)


def delete_channel(view: StateView, channel_id: bytes) -> None:
    """Remove a channel and its expiry index entry (undo data keeps both)."""
    channel = get_channel(view, channel_id)
    if channel is not None:
        delete_height_entry(view, _EXPIRY, channel.expiry_height, channel_id)
    view.delete(_CHANNEL + channel_id)


def get_channel_expiries_at(view: StateView, height: int) -> list[bytes]:
    """Ids of channels with ``expiry_height == height``, in id order."""
    return get_height_entries(view, _EXPIRY, height)


def iter_channels(view: StateView) -> Iterator[tuple[bytes, ChannelState]]:
    """Every open channel in id order."""
    for key, raw in view.iter_prefix(_CHANNEL):
        yield key[1:], ChannelState.decode(raw)


# ---- CHANNEL_OPEN ------------------------------------------------------------------------

def verify_channel_open_params(params: ChainParams, height: int, sender: bytes,
                               body: ChannelOpenBody) -> None:
    """``deposit > 0``, ``penalty >= 0``, ``payee != sender``, ``height + 1 < expiry_height
    <= height + max_escrow_rounds`` (``bad-channel-params``, SPEC §16)."""
    if body.deposit <= 0:
        raise ConsensusError("bad-channel-params", "deposit must be positive")
    if body.penalty < 0:  # unreachable after decoding (unsigned); kept as the spec's words
        raise ConsensusError("bad-channel-params", "penalty must not be negative")
    if body.payee == sender:
        raise ConsensusError("bad-channel-params", "payee is the payer")
    if not height + 1 < body.expiry_height <= height + params.max_escrow_rounds:
        raise ConsensusError("bad-channel-params", f"expiry_height {body.expiry_height} not "
                             f"in {height + 2}..{height + params.max_escrow_rounds}")


def process_channel_open(ctx: "TxContext", view: StateView, tx: "Tx") -> bytes:
    """CHANNEL_OPEN (SPEC §16): fee (rule 5), params, then ``deposit + penalty`` from the
    balance (``insufficient-funds``); nonce += 1. Returns the new ``channel_id``."""
    debit_account(view, tx.sender, tx.fee)
    body: ChannelOpenBody = tx.body
    verify_channel_open_params(ctx.params, ctx.height, tx.sender, body)
    debit_account(view, tx.sender, body.deposit + body.penalty, bump_nonce=True)
    channel_id = compute_channel_id(tx.txid())
    put_channel(view, channel_id, ChannelState(tx.sender, body.payee, body.deposit,
                                               body.penalty, body.expiry_height))
    return channel_id


# ---- CHANNEL_CLOSE and CHANNEL_CHEAT -------------------------------------------------------

def verify_channel_payee(ctx: "TxContext", view: StateView, channel_id: bytes,
                         sender: bytes) -> ChannelState:
    """The first three checks of CHANNEL_CLOSE and CHANNEL_CHEAT (SPEC §16):
    ``unknown-channel``, ``wrong-payee``, ``channel-expired`` (height >= expiry_height)."""
    channel = get_channel(view, channel_id)
    if channel is None:
        raise ConsensusError("unknown-channel")
    if sender != channel.payee:
        raise ConsensusError("wrong-payee")
    if ctx.height >= channel.expiry_height:
        raise ConsensusError("channel-expired", f"height {ctx.height} >= expiry_height "
                             f"{channel.expiry_height}")
    return channel


def verify_channel_close(ctx: "TxContext", view: StateView, tx: "Tx") -> ChannelState:
    """SPEC §16 CHANNEL_CLOSE checks in order; returns the channel. Raises
    ``unknown-channel``, ``wrong-payee``, ``channel-expired``, ``bad-voucher-signature``,
    ``bad-voucher`` (k = 0 or cumulative > deposit), ``fee-exceeds-payout``."""
    body: ChannelCloseBody = tx.body
    channel = verify_channel_payee(ctx, view, body.channel_id, tx.sender)
    voucher = body.voucher
    if not verify_voucher_signature(channel.payer, ctx.genesis_hash, body.channel_id, voucher):
        raise ConsensusError("bad-voucher-signature")
    if voucher.k < 1:
        raise ConsensusError("bad-voucher", "k must be at least 1")
    if voucher.cumulative > channel.deposit:
        raise ConsensusError("bad-voucher", f"cumulative {voucher.cumulative} > deposit "
                             f"{channel.deposit}")
    if tx.fee > voucher.cumulative:
        raise ConsensusError("fee-exceeds-payout")
    return channel


def process_channel_close(ctx: "TxContext", view: StateView, tx: "Tx") -> None:
    """CHANNEL_CLOSE (SPEC §16): the payee receives ``cumulative - fee``, the payer
    ``deposit - cumulative + penalty``; the channel is deleted."""
    channel = verify_channel_close(ctx, view, tx)
    cumulative = tx.body.voucher.cumulative
    delete_channel(view, tx.body.channel_id)
    credit(view, channel.payee, cumulative - tx.fee)
    credit(view, channel.payer, channel.deposit - cumulative + channel.penalty)


def verify_channel_cheat(ctx: "TxContext", view: StateView, tx: "Tx") -> ChannelState:
    """SPEC §16 CHANNEL_CHEAT checks in order; returns the channel. Raises the first three
    reasons of ``verify_channel_close``, ``bad-channel-cheat`` (a signature invalid, or not
    the same ``k >= 1`` with different ``cumulative``), ``fee-exceeds-payout``."""
    body: ChannelCheatBody = tx.body
    channel = verify_channel_payee(ctx, view, body.channel_id, tx.sender)
    for voucher in (body.voucher_a, body.voucher_b):
        if not verify_voucher_signature(channel.payer, ctx.genesis_hash, body.channel_id,
                                        voucher):
            raise ConsensusError("bad-channel-cheat", "voucher signature invalid")
    if not is_equivocation(body.voucher_a, body.voucher_b):
        raise ConsensusError("bad-channel-cheat", "not the same k with different cumulative")
    if tx.fee > channel.deposit + channel.penalty:
        raise ConsensusError("fee-exceeds-payout")
    return channel


def process_channel_cheat(ctx: "TxContext", view: StateView, tx: "Tx") -> None:
    """CHANNEL_CHEAT (SPEC §16): the payee receives ``deposit + penalty - fee``; the channel
    is deleted."""
    channel = verify_channel_cheat(ctx, view, tx)
    delete_channel(view, tx.body.channel_id)
    credit(view, channel.payee, channel.deposit + channel.penalty - tx.fee)


# ---- expiry --------------------------------------------------------------------------------

def process_channel_expiries(ctx: "TxContext", view: StateView) -> None:
    """SPEC §16: after block ``expiry_height``'s transactions and the §9 and §15 refunds,
    each open channel returns ``deposit + penalty`` to its payer and is deleted."""
    for channel_id in get_channel_expiries_at(view, ctx.height):
        channel = get_channel(view, channel_id)
        credit(view, channel.payer, channel.deposit + channel.penalty)
        delete_channel(view, channel_id)


# ---- wallet policy (not consensus) ---------------------------------------------------------

def compute_channel_close_deadline(channel: ChannelState) -> int:
    """The last height whose block may carry a CHANNEL_CLOSE or CHANNEL_CHEAT of
    ``channel``: ``expiry_height - 1`` (SPEC §16: including height ``< expiry_height``)."""
    return channel.expiry_height - 1


def verify_voucher_for_payee(genesis_hash: bytes, channel_id: bytes,
                             channel: ChannelState | None, voucher: Voucher, last_k: int,
                             last_cumulative: int, price: int, current_round: int,
                             margin: int = 0) -> None:
    """What a payee (or one of its points of sale) checks before accepting ``voucher`` as
    the next payment (SPEC §16, wallet policy), in order: the channel exists
    (``unknown-channel``); a close sent now could still be included:
    ``current_round + margin <= expiry_height - 1`` (``channel-expired``); the payer's
    signature (``bad-voucher-signature``); ``voucher.k == last_k + 1``
    (``voucher-out-of-order``); ``voucher.cumulative >= last_cumulative + price``
    (``voucher-underpaid``); ``cumulative <= deposit`` (``bad-voucher``).

    ``last_k`` / ``last_cumulative`` are the last accepted state (0, 0 before the first
    payment); ``price`` is in units. Raises ``ConsensusError``. A voucher whose ``k`` was
    already accepted with another ``cumulative`` is an equivocation: see
    ``is_equivocation`` and CHANNEL_CHEAT.
    """
    if channel is None:
        raise ConsensusError("unknown-channel")
    if current_round + margin > compute_channel_close_deadline(channel):
        raise ConsensusError("channel-expired", f"closable until height "
                             f"{compute_channel_close_deadline(channel)}")
    if not verify_voucher_signature(channel.payer, genesis_hash, channel_id, voucher):
        raise ConsensusError("bad-voucher-signature")
    if voucher.k != last_k + 1:
        raise ConsensusError("voucher-out-of-order", f"expected k {last_k + 1}, got {voucher.k}")
    if voucher.cumulative < last_cumulative + price:
        raise ConsensusError("voucher-underpaid", f"cumulative {voucher.cumulative} < "
                             f"{last_cumulative} + {price}")
    if voucher.cumulative > channel.deposit:
        raise ConsensusError("bad-voucher", f"cumulative {voucher.cumulative} > deposit "
                             f"{channel.deposit}")


def compute_channel_penalty_guidance(interval_seconds: int | Fraction,
                                     seconds_per_payment: int | Fraction,
                                     max_price: int) -> int:
    """The wallet's default channel penalty: seed 003's bound ``p ≤ T̂ / Ť · u₂``
    (Das–Tripathi §3.3 "Upper Bound of Penalty"), taken with equality and rounded down to
    whole units (SPEC §16 policy, not consensus).

    ``interval_seconds`` is T̂, the working time of a point of sale within one
    synchronisation interval (how long it accepts vouchers before it learns the other
    points' last state); ``seconds_per_payment`` is Ť, the mean time per payment;
    ``max_price`` is u₂, the highest price of one payment, in units. ``T̂ / Ť · u₂`` is the
    most one point of sale can accept on a stale state before synchronising, i.e. what an
    equivocating payer gains per extra point of sale it cheats; the paper calls it the
    largest penalty that is still reasonable for an honest payer (who locks it for the
    channel's life). With N points of sale a payer who equivocates at all of them can gain
    up to ``(N - 1)`` times this before being caught; the wallet explains that. Returns
    units; raises ``ValueError`` for ``seconds_per_payment <= 0`` or negative inputs.
    """
    interval = Fraction(interval_seconds)
    per_payment = Fraction(seconds_per_payment)
    if per_payment <= 0:
        raise ValueError("seconds_per_payment must be positive")
    if interval < 0 or max_price < 0:
        raise ValueError("interval_seconds and max_price must not be negative")
    bound = interval / per_payment * max_price
    return bound.numerator // bound.denominator  # p <= bound: round down
