"""Transactions: encoding, signing, txid, and builders (SPEC §2).

``tx = [version, kind, sender, nonce, fee, body, sig]``. The body is kept in its decoded,
typed-checked msgpack form (lists of ints and bytes); REDEEM and CHEAT_PROOF tickets are
kept as 107-byte strings and decoded on demand. The comparison kinds of SPEC §15–§16
(MP_ESCROW .. CHANNEL_CHEAT) carry a typed body: a frozen dataclass from
``consensus.micropay`` / ``consensus.channel`` with ``to_obj()`` / ``from_obj()``.
"""

from dataclasses import dataclass
from typing import Any

from consensus import keys
from consensus.encoding import (expect_bytes, expect_int, expect_list, packb,
                                unpackb_canonical)
from consensus.errors import ConsensusError, DecodeError
from consensus.hashing import tagged_hash
from consensus.channel import ChannelCheatBody, ChannelCloseBody, ChannelOpenBody, Voucher
from consensus.micropay import MpClaimBody, MpEscrowBody
from consensus.ticket import TICKET_SIZE, Ticket

TX_VERSION = 1
COINBASE, TRANSFER, ESCROW_CREATE, REDEEM, CHEAT_PROOF = 0, 1, 2, 3, 4
MP_ESCROW, MP_CLAIM = 5, 6                                 # SPEC §15
CHANNEL_OPEN, CHANNEL_CLOSE, CHANNEL_CHEAT = 7, 8, 9       # SPEC §16
KIND_NAMES = {COINBASE: "COINBASE", TRANSFER: "TRANSFER", ESCROW_CREATE: "ESCROW_CREATE",
              REDEEM: "REDEEM", CHEAT_PROOF: "CHEAT_PROOF", MP_ESCROW: "MP_ESCROW",
              MP_CLAIM: "MP_CLAIM", CHANNEL_OPEN: "CHANNEL_OPEN",
              CHANNEL_CLOSE: "CHANNEL_CLOSE", CHANNEL_CHEAT: "CHANNEL_CHEAT"}
# Kinds that carry the sender's account nonce (SPEC §2 rule 4); the others carry nonce 0.
NONCE_KINDS = frozenset({TRANSFER, ESCROW_CREATE, MP_ESCROW, CHANNEL_OPEN})
MAX_REDEEM_TICKETS = 256
ZERO_SENDER = bytes(32)
ZERO_SIG = bytes(64)
_ARRAY6 = b"\x96"  # msgpack fixarray header of 6 items
_SIG_FIELD = 2 + 64  # the 64-byte signature encoded as bin 8


@dataclass(frozen=True)
class Tx:
    """A transaction of any kind (SPEC §2)."""

    version: int   # always 1
    kind: int      # COINBASE .. CHANNEL_CHEAT
    sender: bytes  # 32-byte public key (all zero for COINBASE)
    nonce: int     # account nonce for NONCE_KINDS; block height for COINBASE; 0 for the others
    fee: int       # units paid to the block's miner
    body: Any      # kind-specific array (kinds 0-4) or typed body (kinds 5-9), SPEC §2 table
    sig: bytes     # 64-byte Ed25519 signature (all zero for COINBASE)

    def to_obj(self) -> list:
        """The msgpack array of this transaction."""
        return [self.version, self.kind, self.sender, self.nonce, self.fee,
                _body_obj(self.body), self.sig]

    def encode(self) -> bytes:
        """Canonical bytes (computed once per object, then cached)."""
        raw = self.__dict__.get("_raw")
        if raw is None:
            raw = packb(self.to_obj())
            object.__setattr__(self, "_raw", raw)
        return raw

    @classmethod
    def decode(cls, data: bytes) -> "Tx":
        """Strictly decode canonical bytes; raises ``ConsensusError`` (bad-encoding,
        bad-version, bad-kind)."""
        tx = cls.from_obj(unpackb_canonical(data, peer=True))
        object.__setattr__(tx, "_raw", bytes(data))  # canonical: exactly ``encode()``
        return tx

    @classmethod
    def from_obj(cls, obj: Any) -> "Tx":
        """Check the shape of a decoded msgpack array and build a ``Tx``.

        Order (SPEC §2 rule 1): envelope well-formed (bad-encoding), version 1
        (bad-version), kind known (bad-kind), body well-formed (bad-encoding).
        """
        version, kind, sender, nonce, fee, body, sig = expect_list(obj, 7, "tx")
        expect_int(version, "tx.version")
        expect_int(kind, "tx.kind")
        expect_bytes(sender, 32, "tx.sender")
        expect_int(nonce, "tx.nonce")
        expect_int(fee, "tx.fee")
        expect_bytes(sig, 64, "tx.sig")
        if version != TX_VERSION:
            raise ConsensusError("bad-version", f"tx version {version}")
        if kind not in KIND_NAMES:
            raise ConsensusError("bad-kind", f"tx kind {kind}")
        tickets = None
        if kind in _BODY_TYPES:
            body = _BODY_TYPES[kind].from_obj(body)
        else:
            tickets = _BODY_CHECKS[kind](body)
        tx = cls(version, kind, sender, nonce, fee, body, sig)
        if tickets is not None:  # checking a REDEEM/CHEAT_PROOF body decoded its tickets
            object.__setattr__(tx, "_tickets", tickets)
        return tx

    def txid(self) -> bytes:
        """``H(b"txid", packb(tx))`` (SPEC §2); computed once per object, then cached."""
        txid = self.__dict__.get("_txid")
        if txid is None:
            txid = tagged_hash(b"txid", self.encode())
            object.__setattr__(self, "_txid", txid)
        return txid

    def signing_message(self, genesis_hash: bytes) -> bytes:
        """``H(b"tx", genesis_hash || packb([version, kind, sender, nonce, fee, body]))``
        (cached per object for the last ``genesis_hash`` asked)."""
        cached = self.__dict__.get("_sigmsg")
        if cached is not None and cached[0] == genesis_hash:
            return cached[1]
        raw = self.__dict__.get("_raw")
        if raw is not None:
            # The canonical 7-array ends with the signature as bin 8 (``c4 40`` + 64
            # bytes): the unsigned 6-array is the same fields under a 6-array header.
            unsigned = _ARRAY6 + raw[1:-_SIG_FIELD]
        else:
            unsigned = packb([self.version, self.kind, self.sender, self.nonce, self.fee,
                              _body_obj(self.body)])
        msg = tagged_hash(b"tx", genesis_hash + unsigned)
        object.__setattr__(self, "_sigmsg", (genesis_hash, msg))
        return msg

    def tickets(self) -> list[Ticket]:
        """Decoded tickets of a REDEEM (all) or CHEAT_PROOF (one or two); decoded once
        per object (a new list each call)."""
        cached = self.__dict__.get("_tickets")
        if cached is None:
            if self.kind == REDEEM:
                cached = [Ticket.decode(t) for t in self.body]
            elif self.kind == CHEAT_PROOF:
                cached = [Ticket.decode(t) for t in self.body if t is not None]
            else:
                cached = []
            object.__setattr__(self, "_tickets", cached)
        return list(cached)


def _check_coinbase_body(body: Any) -> None:
    for out in expect_list(body, None, "coinbase outputs"):
        address, amount = expect_list(out, 2, "coinbase output")
        expect_bytes(address, 32, "coinbase address")
        expect_int(amount, "coinbase amount")


def _check_transfer_body(body: Any) -> None:
    to, amount = expect_list(body, 2, "transfer")
    expect_bytes(to, 32, "transfer.to")
    expect_int(amount, "transfer.amount")


def _check_escrow_body(body: Any) -> None:
    fields = expect_list(body, 8, "escrow_create")
    for value, name in zip(fields[:7], ("escrow_amount", "penalty_amount", "win_num",
                                        "win_den", "beta", "tkt_rate", "draw_len")):
        expect_int(value, name)
    for merchant in expect_list(fields[7], None, "merchants"):
        expect_bytes(merchant, 32, "merchant")


def _check_ticket(raw: Any) -> Ticket:
    return Ticket.decode(expect_bytes(raw, TICKET_SIZE, "ticket"))


def _check_redeem_body(body: Any) -> list[Ticket]:
    tickets = expect_list(body, None, "redeem")
    if not 1 <= len(tickets) <= MAX_REDEEM_TICKETS:
        raise DecodeError(f"redeem carries {len(tickets)} tickets (1..{MAX_REDEEM_TICKETS})")
    return [_check_ticket(raw) for raw in tickets]


def _check_cheat_body(body: Any) -> list[Ticket]:
    ticket_a, ticket_b = expect_list(body, 2, "cheat_proof")
    tickets = [_check_ticket(ticket_a)]
    if ticket_b is not None:
        tickets.append(_check_ticket(ticket_b))
    return tickets


_BODY_CHECKS = {COINBASE: _check_coinbase_body, TRANSFER: _check_transfer_body,
                ESCROW_CREATE: _check_escrow_body, REDEEM: _check_redeem_body,
                CHEAT_PROOF: _check_cheat_body}
# Typed bodies: ``from_obj`` checks the shape (bad-encoding) and builds the dataclass.
_BODY_TYPES = {MP_ESCROW: MpEscrowBody, MP_CLAIM: MpClaimBody, CHANNEL_OPEN: ChannelOpenBody,
               CHANNEL_CLOSE: ChannelCloseBody, CHANNEL_CHEAT: ChannelCheatBody}


def _body_obj(body: Any) -> Any:
    """The msgpack form of a body: typed bodies by their ``to_obj()``, others as they are."""
    return body.to_obj() if hasattr(body, "to_obj") else body


def _signed(seed: bytes, genesis_hash: bytes, kind: int, nonce: int, fee: int, body: Any) -> Tx:
    unsigned = Tx(TX_VERSION, kind, keys.public_key(seed), nonce, fee, body, ZERO_SIG)
    return Tx(TX_VERSION, kind, unsigned.sender, nonce, fee, body,
              keys.sign(seed, unsigned.signing_message(genesis_hash)))


def make_coinbase(height: int, outputs: list[tuple[bytes, int]]) -> Tx:
    """The unsigned COINBASE of the block at ``height`` paying ``outputs``."""
    return Tx(TX_VERSION, COINBASE, ZERO_SENDER, height, 0,
              [[addr, amount] for addr, amount in outputs], ZERO_SIG)


def make_transfer(seed: bytes, genesis_hash: bytes, nonce: int, fee: int, to: bytes,
                  amount: int) -> Tx:
    """A signed TRANSFER of ``amount`` units to ``to``."""
    return _signed(seed, genesis_hash, TRANSFER, nonce, fee, [to, amount])


def make_escrow_create(seed: bytes, genesis_hash: bytes, nonce: int, fee: int,
                       escrow_amount: int, penalty_amount: int, win_num: int, win_den: int,
                       beta: int, tkt_rate: int, draw_len: int, merchants: list[bytes]) -> Tx:
    """A signed ESCROW_CREATE (SPEC §3.1); amounts in units."""
    body = [escrow_amount, penalty_amount, win_num, win_den, beta, tkt_rate, draw_len,
            list(merchants)]
    return _signed(seed, genesis_hash, ESCROW_CREATE, nonce, fee, body)


def make_redeem(seed: bytes, genesis_hash: bytes, fee: int, tickets: list[Ticket]) -> Tx:
    """A signed REDEEM of 1..256 tickets, nonce 0 (SPEC §7)."""
    return _signed(seed, genesis_hash, REDEEM, 0, fee, [t.encode() for t in tickets])


def make_cheat_proof(seed: bytes, genesis_hash: bytes, fee: int, ticket_a: Ticket,
                     ticket_b: Ticket | None) -> Tx:
    """A signed CHEAT_PROOF: a duplicate pair, or one out-of-range ticket (SPEC §8)."""
    body = [ticket_a.encode(), ticket_b.encode() if ticket_b is not None else None]
    return _signed(seed, genesis_hash, CHEAT_PROOF, 0, fee, body)


# ---- the comparison schemes (SPEC §15, §16) -------------------------------------------

def make_mp_escrow(seed: bytes, genesis_hash: bytes, nonce: int, fee: int, amount: int,
                   win_bits: int, refund_height: int) -> Tx:
    """A signed MP_ESCROW locking ``amount`` units until ``refund_height`` (SPEC §15)."""
    return _signed(seed, genesis_hash, MP_ESCROW, nonce, fee,
                   MpEscrowBody(amount, win_bits, refund_height))


def make_mp_claim(seed: bytes, genesis_hash: bytes, fee: int, mp_escrow_id: bytes, r1: bytes,
                  r2: bytes, ticket_sig: bytes) -> Tx:
    """A signed MP_CLAIM of a winning MICROPAY ticket by its payee, nonce 0 (SPEC §15)."""
    return _signed(seed, genesis_hash, MP_CLAIM, 0, fee,
                   MpClaimBody(mp_escrow_id, r1, r2, ticket_sig))


def make_channel_open(seed: bytes, genesis_hash: bytes, nonce: int, fee: int, payee: bytes,
                      deposit: int, penalty: int, expiry_height: int) -> Tx:
    """A signed CHANNEL_OPEN from the payer (SPEC §16); amounts in units."""
    return _signed(seed, genesis_hash, CHANNEL_OPEN, nonce, fee,
                   ChannelOpenBody(payee, deposit, penalty, expiry_height))


def make_channel_close(seed: bytes, genesis_hash: bytes, fee: int, channel_id: bytes,
                       voucher: Voucher) -> Tx:
    """A signed CHANNEL_CLOSE by the payee with its best voucher, nonce 0 (SPEC §16)."""
    return _signed(seed, genesis_hash, CHANNEL_CLOSE, 0, fee,
                   ChannelCloseBody(channel_id, voucher))


def make_channel_cheat(seed: bytes, genesis_hash: bytes, fee: int, channel_id: bytes,
                       voucher_a: Voucher, voucher_b: Voucher) -> Tx:
    """A signed CHANNEL_CHEAT: two vouchers with the same k, nonce 0 (SPEC §16)."""
    return _signed(seed, genesis_hash, CHANNEL_CHEAT, 0, fee,
                   ChannelCheatBody(channel_id, voucher_a, voucher_b))
