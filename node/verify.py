"""Heavy checks in worker processes: a block's signatures, its VDF segments, and the VDF
the next template needs (SPEC §5, §10).

``WorkerPool.prepare(block, state)`` runs in the node's block thread (never in the trio
thread): it collects the block's signature triples (transaction signatures, and REDEEM /
CHEAT_PROOF ticket signatures whose escrow already exists) and its VDF segments, checks
them in parallel across ``workers`` processes, in several chunks per worker (each sent
as soon as it is collected, so the workers start while the rest is still being read),
and returns at once a ``PendingChecks`` container of them. Consensus gets it as ``verified`` and
skips the checks found valid (waiting for a chunk only when it reaches one not back
yet, so the state work overlaps the workers'); anything missing or invalid is simply
checked again inline, so reject reasons and their order do not change.
"""

import concurrent.futures
from collections.abc import Container, Iterator

from consensus import keys
from consensus.block import Block
from consensus.params import ChainParams
from consensus.state import StateView, get_escrow
from consensus.tx import CHEAT_PROOF, COINBASE, REDEEM
from consensus.vdf import compute_vdf, is_segment_valid, vdf_segments
from node.procpool import RestartingPool, result_or_inline

MIN_PARALLEL = 64  # fewer signatures than this are not worth a round trip


def guided_chunks(count: int, workers: int, smallest: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(count)`` in chunks of shrinking size (guided
    self-scheduling): each takes ``1/(2·workers)`` of what is left, at least ``smallest``.

    Consensus consumes the results in order, so the first chunk decides when it can
    start, and the last ones how long one worker idles while another finishes (at most
    a ``smallest`` chunk) and how much state work is left after the last result."""
    out, start = [], 0
    while start < count:
        size = max(smallest, (count - start) // (2 * workers))
        out.append((start, min(count, start + size)))
        start += size
    return out


def verify_triples(triples: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """``keys.verify`` of each ``(pubkey, msg, sig)`` (runs in a worker process)."""
    return [keys.verify(pk, msg, sig) for pk, msg, sig in triples]


def check_segments(segments: list[tuple]) -> list[bool]:
    """``is_segment_valid`` of each VDF segment (runs in a worker process)."""
    return [is_segment_valid(s) for s in segments]


class Either:
    """``x in Either(a, b)`` when ``x`` is in ``a`` or in ``b``."""

    def __init__(self, first: Container, second: Container) -> None:
        self.first, self.second = first, second

    def __contains__(self, item) -> bool:
        return item in self.first or item in self.second


class WorkerPool:
    """A process pool (``RestartingPool``) for signature batches and VDF work;
    ``workers == 0`` checks everything inline (in the calling thread). Work lost to a
    worker that died is done again inline; the pool replaces itself."""

    def __init__(self, params: ChainParams, genesis_hash: bytes, workers: int = 2) -> None:
        self.params = params
        self.genesis_hash = genesis_hash
        self.workers = workers
        self._pool = RestartingPool(workers) if workers > 0 else None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown()

    def compute_vdf(self, block_hash: bytes) -> tuple[bytes, list[bytes]]:
        """``consensus.vdf.compute_vdf`` for ``block_hash`` in a worker process, inline
        if the worker fails (blocking: call it from a thread)."""
        args = (block_hash, self.params.vdf_iterations, self.params.vdf_checkpoints)
        if self._pool is None:
            return compute_vdf(*args)
        return self._pool.run(compute_vdf, *args)

    def collect(self, block: Block, state: StateView, known: Container
                ) -> tuple[list[tuple[bytes, bytes, bytes]], list[tuple]]:
        """The signature triples (not already in ``known``) and VDF segments of ``block``."""
        return list(self.iter_triples(block, state, known)), self.segments(block)

    def iter_triples(self, block: Block, state: StateView, known: Container
                     ) -> Iterator[tuple[bytes, bytes, bytes]]:
        """The signature triples of ``block`` not already in ``known``, in block order:
        each transaction's, then its tickets' whose escrow exists in ``state``."""
        gh, owners = self.genesis_hash, {}
        for tx in block.txs:
            if tx.kind == COINBASE:
                continue
            triple = (tx.sender, tx.signing_message(gh), tx.sig)
            if triple not in known:
                yield triple
            if tx.kind in (REDEEM, CHEAT_PROOF):
                for ticket in tx.tickets():
                    owner = owners.get(ticket.escrow_id)
                    if owner is None:
                        escrow = get_escrow(state, ticket.escrow_id)
                        if escrow is None:
                            continue
                        owner = owners[ticket.escrow_id] = escrow.owner
                    triple = (owner, ticket.signing_message(gh), ticket.sig)
                    if triple not in known:
                        yield triple

    def segments(self, block: Block) -> list[tuple]:
        """The VDF segments of ``block``'s header (none if its checkpoint count is wrong:
        consensus rejects the count itself)."""
        h = block.header
        if len(h.vdf_checkpoints) != self.params.vdf_checkpoints - 1:
            return []
        return vdf_segments(h.prev_hash, h.vdf, list(h.vdf_checkpoints),
                            self.params.vdf_iterations, self.params.vdf_checkpoints)

    def verify_many(self, triples: list[tuple[bytes, bytes, bytes]]) -> list:
        """The valid ones of ``triples``, checked across the worker processes (blocking:
        call it from a thread)."""
        if self._pool is None or len(triples) < MIN_PARALLEL:
            return [t for t in triples if keys.verify(*t)]
        chunk = max(1, -(-len(triples) // self.workers))
        parts = [triples[i:i + chunk] for i in range(0, len(triples), chunk)]
        futures = [self._pool.submit(verify_triples, part) for part in parts]
        return [t for part, f in zip(parts, futures)
                for t, ok in zip(part, result_or_inline(f, verify_triples, part)) if ok]

    def submit_chunks(self, triples: list[tuple[bytes, bytes, bytes]], size: int
                      ) -> list[tuple[list, concurrent.futures.Future]]:
        """Start checking ``triples`` in the workers, ``size`` per task; returns
        ``[(part, future of its list of bools), ...]`` in order (needs ``workers > 0``)."""
        parts = [triples[i:i + size] for i in range(0, len(triples), size)]
        return [(part, self._pool.submit(verify_triples, part)) for part in parts]

    def prepare(self, block: Block, state: StateView, known: Container) -> Container:
        """Facts of ``block`` checked valid in parallel (see module docstring).

        Each chunk goes to the workers as soon as its triples are collected, so they
        start on the first while the rest of the block is still being read."""
        if self._pool is None:
            return set()  # everything is checked inline by consensus
        slow_vdf = self.params.vdf_iterations >= 100_000
        most = sum(1 + (len(tx.body) if tx.kind in (REDEEM, CHEAT_PROOF) else 0)
                   for tx in block.txs if tx.kind != COINBASE)  # triples at most
        if most < MIN_PARALLEL and not slow_vdf:
            return set()  # cheaper inline
        sizes = [end - start for start, end in guided_chunks(most, self.workers,
                                                             MIN_PARALLEL // 2)]
        futures, part = [], []
        for triple in self.iter_triples(block, state, known):
            part.append(triple)
            if len(part) == sizes[len(futures)]:
                futures.append((part, self._pool.submit(verify_triples, part)))
                part = []
        if part:
            futures.append((part, self._pool.submit(verify_triples, part)))
        if slow_vdf:
            for seg in self.segments(block):
                futures.append(([seg], self._pool.submit(check_segments, [seg])))
        return PendingChecks(futures)


class PendingChecks:
    """The facts a ``WorkerPool.prepare`` is checking: ``item in checks`` is True when
    the workers found ``item`` valid, waiting for its chunk if it is not back yet;
    False for anything not submitted, found invalid, or whose check failed (consensus
    then checks it inline, so the outcome never depends on the workers)."""

    def __init__(self, futures: list[tuple[list, concurrent.futures.Future]]) -> None:
        # fact -> its chunk; consensus asks once per fact, so a lookup is one dict get
        # and, once the chunk is back, the chunk's answer (True when all of it is valid)
        self._chunk_of: dict = {}
        for part, future in futures:
            chunk = _Chunk(part, future)
            for item in part:
                self._chunk_of[item] = chunk

    def __contains__(self, item) -> bool:
        chunk = self._chunk_of.get(item)
        if chunk is None:
            return False
        valid = chunk.valid
        if valid is None:
            valid = chunk.resolve()
        return valid is True or item in valid

    def __len__(self) -> int:
        return len(self._chunk_of)


class _Chunk:
    """One submitted part: ``valid`` is None until ``resolve``, then True (all valid) or
    the set of the valid ones."""

    __slots__ = ("part", "future", "valid")

    def __init__(self, part: list, future: concurrent.futures.Future) -> None:
        self.part, self.future, self.valid = part, future, None

    def resolve(self) -> "bool | set":
        try:
            results = self.future.result()
        except Exception:  # a broken worker: consensus checks these inline
            results = [False] * len(self.part)
        if all(results) and len(results) == len(self.part):
            self.valid = True
        else:
            self.valid = {fact for fact, ok in zip(self.part, results) if ok}
        self.part = self.future = None
        return self.valid
