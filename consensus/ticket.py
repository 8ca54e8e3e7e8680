"""The 107-byte lottery ticket (SPEC §4, paper §4.2)."""

import struct
from dataclasses import dataclass

from consensus import keys
from consensus.errors import DecodeError

TICKET_SIZE = 107
TICKET_VERSION = 1
TICKET_MAGIC = b"MCT1"
_BODY_SIZE = 43  # bytes[0:43], the signed part
_LAYOUT = struct.Struct(">BH32sQ64s")  # version, merchant_index, escrow_id, seqno, sig


@dataclass(frozen=True)
class Ticket:
    """One signed lottery ticket; identity is ``(escrow_id, seqno)``."""

    version: int         # u8, always 1
    merchant_index: int  # u16, position in the escrow's merchant list
    escrow_id: bytes     # 32 bytes
    seqno: int           # u64 sequence number
    sig: bytes           # 64-byte Ed25519 signature by the escrow owner

    def body(self) -> bytes:
        """The 43 signed bytes: version, merchant_index, escrow_id, seqno (big-endian)."""
        body = self.__dict__.get("_body")
        if body is None:
            body = (bytes([self.version]) + self.merchant_index.to_bytes(2, "big")
                    + self.escrow_id + self.seqno.to_bytes(8, "big"))
            object.__setattr__(self, "_body", body)
        return body

    def encode(self) -> bytes:
        """The fixed 107-byte layout of SPEC §4."""
        return self.body() + self.sig

    @classmethod
    def decode(cls, data: bytes) -> "Ticket":
        """Parse 107 bytes; raises ``DecodeError`` for a wrong size or version."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray)):
                raise DecodeError(f"ticket must be {TICKET_SIZE} bytes")
            data = bytes(data)
        if len(data) != TICKET_SIZE:
            raise DecodeError(f"ticket must be {TICKET_SIZE} bytes")
        version, merchant_index, escrow_id, seqno, sig = _LAYOUT.unpack(data)
        if version != TICKET_VERSION:
            raise DecodeError(f"unknown ticket version {version}")
        # A block carries up to 30 x 256 of these: the frozen dataclass's fields are set
        # directly (one struct unpack, no __init__), as its __init__ would set them.
        ticket = object.__new__(cls)
        fields = ticket.__dict__
        fields["version"] = version
        fields["merchant_index"] = merchant_index
        fields["escrow_id"] = escrow_id
        fields["seqno"] = seqno
        fields["sig"] = sig
        fields["_body"] = data[:_BODY_SIZE]
        return ticket

    def signing_message(self, genesis_hash: bytes) -> bytes:
        """``b"MCT1" || genesis_hash || bytes[0:43]`` (SPEC §4); kept per object for the
        last ``genesis_hash`` asked, so the worker-pool triple and consensus' lookup of it
        use one bytes object (hashed once)."""
        cached = self.__dict__.get("_sigmsg")
        if cached is not None and cached[0] == genesis_hash:
            return cached[1]
        msg = TICKET_MAGIC + genesis_hash + self.body()
        object.__setattr__(self, "_sigmsg", (genesis_hash, msg))
        return msg

    @property
    def key(self) -> tuple[bytes, int]:
        """The ticket's identity ``(escrow_id, seqno)``."""
        return (self.escrow_id, self.seqno)


def sign_ticket(seed: bytes, genesis_hash: bytes, escrow_id: bytes, merchant_index: int,
                seqno: int) -> Ticket:
    """A ticket for ``merchant_index`` and ``seqno`` signed with the escrow owner's seed."""
    if not 0 <= merchant_index < 2**16 or not 0 <= seqno < 2**64 or len(escrow_id) != 32:
        raise ValueError("merchant_index is u16, seqno u64, escrow_id 32 bytes")
    unsigned = Ticket(TICKET_VERSION, merchant_index, escrow_id, seqno, bytes(64))
    return Ticket(TICKET_VERSION, merchant_index, escrow_id, seqno,
                  keys.sign(seed, unsigned.signing_message(genesis_hash)))


def verify_ticket_signature(ticket: Ticket, owner: bytes, genesis_hash: bytes) -> bool:
    """True when ``ticket.sig`` is the owner's signature over the ticket body."""
    return keys.verify(owner, ticket.signing_message(genesis_hash), ticket.sig)
