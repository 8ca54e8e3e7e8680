"""Gossip between the points of sale of one payee: each pushes the receipts of the vouchers
it accepted to every peer (SPEC §16 "points of sale ... pass the last accepted state to
each other"; docs/DESIGN.md "Several points of sale of one payee").

``merchant serve NAME --point-of-sale N --peer-pos URL ... --sync-interval T`` runs one
``PosGossip`` beside the voucher service. For each peer URL a trio task takes the
receipts queued in the channel store's outbox (written in the same synced batch as the
acceptance, so a SIGKILL loses none), oldest first, at most ``PUSH_BATCH`` at a time, and
posts them to ``POST {peer}/v1/receipts``::

    {"pos": N, "receipts": [Receipt.to_json(), ...]}

The peer answers 200 ``{"learned": n, "known": n, "equivocations": n, "rejected":
[{"index", "reason"}]}`` after its synced writes; only then are the entries dropped. A
rejected receipt is dropped too (retrying cannot make it valid); 503 (the peer's node is
down) or no answer is retried with a growing pause. With nothing queued, an empty push
every ``heartbeat`` seconds keeps the peer link measured.

The seed-003 bound ``p <= T̂ / Ť · u₂`` assumes a point of sale works at most T̂ on a
stale state, so a point of sale *enforces* T̂: it accepts vouchers only while every peer
acknowledged a push within the last ``sync_interval`` seconds and no outbox holds more
than ``MAX_OUTBOX`` receipts; otherwise the voucher is refused (``pos-unsynced``). A
point that cannot reach its peers thus stops within T̂, and every voucher accepted
anywhere reaches every point within T̂ or its point stops taking payments.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import trio

from consensus.hashing import tagged_hash
from wallet.merchant.channel_store import ChannelStore
from wallet.receipts import MAX_POS_INDEX, Receipt, ReceiptError

log = logging.getLogger(__name__)

RECEIPTS_PATH = "/v1/receipts"
PUSH_BATCH = 256  # receipts per push
MAX_PUSH_BODY = PUSH_BATCH * 400 + 1024  # bytes; one receipt's JSON is about 330
MAX_OUTBOX = 10_000  # receipts queued for one peer before acceptance stops
DEFAULT_SYNC_INTERVAL = 10.0  # seconds (T̂)
PUSH_TIMEOUT = 10.0  # seconds for one push
MAX_BACKOFF = 2.0  # seconds between failed pushes at most
UNSYNCED = "pos-unsynced"


def compute_peer_id(url: str) -> bytes:
    """The 8-byte outbox key of a peer: ``H(b"pos-peer", url without trailing /)[:8]``."""
    return tagged_hash(b"pos-peer", url.rstrip("/").encode())[:8]


@dataclass(frozen=True)
class PosConfig:
    """One point of sale of a payee: its ``index`` (0 ... 255; point 0 is the one that
    sends CHANNEL_CLOSE), the URLs of its ``peers`` and the ``sync_interval`` T̂ in seconds
    it may work without a push acknowledged by each peer."""

    index: int = 0
    peers: tuple[str, ...] = ()
    sync_interval: float = DEFAULT_SYNC_INTERVAL
    peer_ids: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_POS_INDEX:
            raise ValueError(f"point of sale index must be 0 ... {MAX_POS_INDEX}")
        if self.sync_interval <= 0:
            raise ValueError("sync interval must be positive")
        for url in self.peers:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"peer point of sale {url!r} is not an http(s) URL")
        object.__setattr__(self, "peer_ids", tuple(compute_peer_id(u) for u in self.peers))

    @property
    def closes(self) -> bool:
        """Whether this point of sale sends CHANNEL_CLOSE (only point 0 does)."""
        return self.index == 0


def receipts_request(pos_index: int, receipts: list[bytes]) -> bytes:
    """The JSON body of a push: encoded receipts (store form) to their wire form."""
    return json.dumps({"pos": pos_index,
                       "receipts": [Receipt.decode(r).to_json() for r in receipts]}).encode()


def parse_receipts_request(body: bytes) -> list[Receipt | str]:
    """The receipts of a push body; a string (the reason) in place of a malformed one.
    Raises ``ValueError`` for a body that is not ``{"pos", "receipts": [...]}`` of at most
    ``PUSH_BATCH``."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("receipts"), list):
        raise ValueError('expected {"pos": N, "receipts": [...]}')
    if len(doc["receipts"]) > PUSH_BATCH:
        raise ValueError(f"at most {PUSH_BATCH} receipts per push")
    out: list[Receipt | str] = []
    for item in doc["receipts"]:
        try:
            out.append(Receipt.from_json(item))
        except ReceiptError:
            out.append("bad-encoding")
    return out


class PosGossip:
    """Pushes this point of sale's accepted receipts to its peers (module docstring) and
    says whether it is synchronised enough to accept (``unsynced``)."""

    def __init__(self, config: PosConfig, store: ChannelStore, *,
                 heartbeat: float | None = None) -> None:
        self.config = config
        self._store = store
        self._heartbeat = heartbeat if heartbeat is not None else min(
            1.0, config.sync_interval / 4)
        now = time.monotonic()
        self.last_sync = {pid: now for pid in config.peer_ids}  # a fresh start may work T̂
        self._wake = {pid: trio.Event() for pid in config.peer_ids}
        self.pushed = 0  # receipts acknowledged by peers, for status

    def unsynced(self) -> str | None:
        """None when this point of sale may accept a voucher now, else why not."""
        now = time.monotonic()
        for url, pid in zip(self.config.peers, self.config.peer_ids):
            if self._store.outbox_count(pid) >= MAX_OUTBOX:
                return f"{MAX_OUTBOX} receipts not yet delivered to {url}"
            if now - self.last_sync[pid] > self.config.sync_interval:
                return (f"no push acknowledged by {url} for "
                        f"{now - self.last_sync[pid]:.1f} s (sync interval "
                        f"{self.config.sync_interval} s)")
        return None

    def notify(self) -> None:
        """A receipt was queued: push now."""
        for pid, event in self._wake.items():
            event.set()
            self._wake[pid] = trio.Event()

    def status(self) -> dict:
        """Per peer: receipts queued, seconds since its last acknowledged push."""
        now = time.monotonic()
        return {"pos": self.config.index, "sync_interval": self.config.sync_interval,
                "peers": [{"url": url, "queued": self._store.outbox_count(pid),
                           "since_sync": round(now - self.last_sync[pid], 3)}
                          for url, pid in zip(self.config.peers, self.config.peer_ids)]}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """One pushing task per peer, until cancelled."""
        async with trio.open_nursery() as nursery:
            for url, pid in zip(self.config.peers, self.config.peer_ids):
                nursery.start_soon(self._push_loop, url, pid)
            task_status.started()

    async def _push_loop(self, url: str, pid: bytes) -> None:
        from wallet.httpclient import HttpConnections

        connections = HttpConnections(url.rstrip("/") + RECEIPTS_PATH, PUSH_TIMEOUT)
        backoff = 0.05
        try:
            while True:
                wake = self._wake[pid]
                batch = await trio.to_thread.run_sync(self._store.outbox, pid, PUSH_BATCH)
                body = receipts_request(self.config.index, [v for _, v in batch])
                try:
                    status, content = await trio.to_thread.run_sync(
                        lambda: connections.post(body, {"Content-Type": "application/json"}),
                        abandon_on_cancel=True)
                except OSError as exc:
                    status, content = None, str(exc).encode()
                if status != 200:
                    log.info("push to point of sale %s failed (%s %r); retrying", url,
                             status, content[:200])
                    await trio.sleep(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
                    continue
                backoff = 0.05
                self.last_sync[pid] = time.monotonic()
                if batch:
                    await trio.to_thread.run_sync(self._store.outbox_done, pid,
                                                  [k for k, _ in batch])
                    self.pushed += len(batch)
                    if len(batch) == PUSH_BATCH:
                        continue
                with trio.move_on_after(self._heartbeat):
                    await wake.wait()
        finally:
            connections.close()
