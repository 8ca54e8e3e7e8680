"""Counting the comparison from the chain itself (SPEC §17).

``ChainCounter.read_block(h)`` fetches block ``h`` with ``getblock h 0`` (raw bytes),
decodes it and classifies every transaction by kind; a transaction belongs to the run
whose key sent it (each run has its own payer and merchants). Escrows, MP escrows and
channels are recognised by their creating transaction; after each block their state is
read back (``getescrow`` / ``getmpescrow`` / ``getchannel``) and the coins still locked
are added up, so ``coin_blocks`` is Σ amount × (release height − including height) with
partial releases (REDEEMs) counted as they happen. ``check_conservation`` is SPEC §10's
invariant over every address the chain has shown.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from consensus.block import Block
from consensus.channel import compute_channel_id
from consensus.escrow import compute_escrow_id
from consensus.micropay import compute_mp_escrow_id
from consensus.tx import (CHANNEL_CHEAT, CHANNEL_CLOSE, CHANNEL_OPEN, CHEAT_PROOF, COINBASE,
                          ESCROW_CREATE, KIND_NAMES, MP_CLAIM, MP_ESCROW, REDEEM, Tx)

LOCK_KINDS = {ESCROW_CREATE: "escrow", MP_ESCROW: "mp_escrow", CHANNEL_OPEN: "channel"}


@dataclass
class RunCounts:
    """What the chain shows of one run."""

    txs: dict[str, int] = field(default_factory=lambda: defaultdict(int))     # by kind name
    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))   # by kind name
    created: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # escrow / mp_escrow / channel
    coin_blocks: int = 0          # units × blocks
    redeemed: dict[tuple[bytes, int, int], int] = field(default_factory=dict)  # (eid, seqno, index) -> h
    redeem_tickets: dict[tuple[bytes, int, int], bytes] = field(default_factory=dict)
    mp_claims: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)     # id -> (payee, h)
    closes: dict[bytes, tuple[str, int, int]] = field(default_factory=dict)     # id -> (kind, cum, h)
    cheat_proofs: list[int] = field(default_factory=list)                       # heights

    @property
    def total_txs(self) -> int:
        return sum(self.txs.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


@dataclass
class LockedObject:
    kind: str          # escrow / mp_escrow / channel
    run: str
    lock_height: int
    release_height: int | None = None
    locked: int = 0    # units after the last block read


class ChainCounter:
    """Reads blocks as they are mined and keeps per-run counts (see module docstring)."""

    def __init__(self, rpc, owners: dict[bytes, str]) -> None:
        self.rpc = rpc
        self.owners = owners                   # address -> run name
        self.runs: dict[str, RunCounts] = defaultdict(RunCounts)
        self.objects: dict[bytes, LockedObject] = {}
        self.addresses: set[bytes] = set(owners)
        self.coinbase_bytes = 0
        self.block_bytes = 0
        self.unowned: list[str] = []           # txids sent by keys of no run

    def read_block(self, height: int) -> Block:
        """Classify block ``height``'s transactions, then read back every live lock."""
        raw = bytes.fromhex(self.rpc.getblock(height, 0))
        block = Block.decode(raw)
        self.block_bytes += len(raw)
        block_hash = block.hash()
        for tx in block.txs:
            size = len(tx.encode())
            if tx.kind == COINBASE:
                self.coinbase_bytes += size
                self.addresses.update(addr for addr, _ in tx.body)
                continue
            run = self.owners.get(tx.sender)
            if run is None:
                self.unowned.append(tx.txid().hex())
                continue
            self._count(run, tx, size, height, block_hash)
        self._read_locks(height)
        return block

    def _count(self, run: str, tx: Tx, size: int, height: int, block_hash: bytes) -> None:
        counts = self.runs[run]
        name = KIND_NAMES[tx.kind]
        counts.txs[name] += 1
        counts.bytes[name] += size
        if tx.kind in LOCK_KINDS:
            kind = LOCK_KINDS[tx.kind]
            counts.created[kind] += 1
            if tx.kind == ESCROW_CREATE:
                oid = compute_escrow_id(block_hash, tx.txid())
                self.addresses.update(tx.body[7])
            elif tx.kind == MP_ESCROW:
                oid = compute_mp_escrow_id(tx.txid())
            else:
                oid = compute_channel_id(tx.txid())
                self.addresses.add(tx.body.payee)
            self.objects[oid] = LockedObject(kind, run, height)
        elif tx.kind == REDEEM:
            for ticket in tx.tickets():
                key = (ticket.escrow_id, ticket.seqno, ticket.merchant_index)
                counts.redeemed[key] = height
                counts.redeem_tickets[key] = ticket.encode()
        elif tx.kind == CHEAT_PROOF:
            counts.cheat_proofs.append(height)
        elif tx.kind == MP_CLAIM:
            counts.mp_claims[tx.body.mp_escrow_id] = (tx.sender, height)
        elif tx.kind == CHANNEL_CLOSE:
            counts.closes[tx.body.channel_id] = ("close", tx.body.voucher.cumulative, height)
        elif tx.kind == CHANNEL_CHEAT:
            counts.closes[tx.body.channel_id] = ("cheat", 0, height)

    def _read_locks(self, height: int) -> None:
        for oid, obj in self.objects.items():
            if obj.release_height is not None:
                continue
            if obj.kind == "escrow":
                state = self.rpc.getescrow(oid.hex())
                locked = None if state is None else state["escrow_balance"] + state["penalty_balance"]
            elif obj.kind == "mp_escrow":
                state = self.rpc.getmpescrow(oid.hex())
                locked = None if state is None else state["amount"]
            else:
                state = self.rpc.getchannel(oid.hex())
                locked = None if state is None else state["deposit"] + state["penalty"]
            if locked is None:
                obj.release_height, obj.locked = height, 0
            else:
                obj.locked = locked
                self.runs[obj.run].coin_blocks += locked

    def live_objects(self) -> list[bytes]:
        """Ids of escrows, MP escrows and channels not yet released."""
        return [oid for oid, o in self.objects.items() if o.release_height is None]

    def locked_total(self) -> int:
        return sum(o.locked for o in self.objects.values() if o.release_height is None)

    def check_conservation(self) -> tuple[bool, str]:
        """SPEC §10: Σ accounts + Σ locked + burned == supply (premine + minted)."""
        info = self.rpc.getinfo()
        accounts = sum(self.rpc.getaccount(a.hex())["balance"] for a in self.addresses)
        locked = self.locked_total()
        ok = accounts + locked + info["burned"] == info["supply"]
        return ok, (f"accounts {accounts} + locked {locked} + burned {info['burned']} "
                    f"{'==' if ok else '!='} supply {info['supply']} at height {info['height']}")
