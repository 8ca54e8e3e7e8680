"""Heavy checks in worker processes: a block's signatures, its VDF segments, and the VDF
the next template needs (SPEC §5, §10).

``WorkerPool.prepare(block, state)`` runs in the node's block thread (never in the trio
thread): it collects the block's signature triples (transaction signatures, and REDEEM /
CHEAT_PROOF ticket signatures whose escrow already exists) and its VDF segments, checks
them in parallel across ``workers`` processes and returns the valid ones as a set.
Consensus then gets that set as ``verified`` and skips those checks; anything missing
or invalid is simply checked again inline, so reject reasons and their order do not
change.
"""

import concurrent.futures
import multiprocessing
from collections.abc import Container

from consensus import keys
from consensus.block import Block
from consensus.params import ChainParams
from consensus.state import StateView, get_escrow
from consensus.tx import CHEAT_PROOF, COINBASE, REDEEM
from consensus.vdf import compute_vdf, is_segment_valid, vdf_segments

MIN_PARALLEL = 64  # fewer signatures than this are not worth a round trip


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
    """A spawn-context process pool for signature batches and VDF work; ``workers == 0``
    checks everything inline (in the calling thread)."""

    def __init__(self, params: ChainParams, genesis_hash: bytes, workers: int = 2) -> None:
        self.params = params
        self.genesis_hash = genesis_hash
        self.workers = workers
        self._pool = None
        if workers > 0:
            ctx = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                                mp_context=ctx)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def compute_vdf(self, block_hash: bytes) -> tuple[bytes, list[bytes]]:
        """``consensus.vdf.compute_vdf`` for ``block_hash`` in a worker process
        (blocking: call it from a thread)."""
        args = (block_hash, self.params.vdf_iterations, self.params.vdf_checkpoints)
        if self._pool is None:
            return compute_vdf(*args)
        return self._pool.submit(compute_vdf, *args).result()

    def collect(self, block: Block, state: StateView, known: Container
                ) -> tuple[list[tuple[bytes, bytes, bytes]], list[tuple]]:
        """The signature triples (not already in ``known``) and VDF segments of ``block``."""
        gh, triples, owners = self.genesis_hash, [], {}
        for tx in block.txs:
            if tx.kind == COINBASE:
                continue
            triple = (tx.sender, tx.signing_message(gh), tx.sig)
            if triple not in known:
                triples.append(triple)
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
                        triples.append(triple)
        h = block.header
        segments = vdf_segments(h.prev_hash, h.vdf, list(h.vdf_checkpoints),
                                self.params.vdf_iterations, self.params.vdf_checkpoints)
        return triples, segments

    def verify_many(self, triples: list[tuple[bytes, bytes, bytes]]) -> list:
        """The valid ones of ``triples``, checked across the worker processes (blocking:
        call it from a thread)."""
        if self._pool is None or len(triples) < MIN_PARALLEL:
            return [t for t in triples if keys.verify(*t)]
        chunk = max(1, -(-len(triples) // self.workers))
        parts = [triples[i:i + chunk] for i in range(0, len(triples), chunk)]
        futures = [self._pool.submit(verify_triples, part) for part in parts]
        return [t for part, f in zip(parts, futures) for t, ok in zip(part, f.result()) if ok]

    def submit_chunks(self, triples: list[tuple[bytes, bytes, bytes]], size: int
                      ) -> list[tuple[list, concurrent.futures.Future]]:
        """Start checking ``triples`` in the workers, ``size`` per task; returns
        ``[(part, future of its list of bools), ...]`` in order (needs ``workers > 0``)."""
        parts = [triples[i:i + size] for i in range(0, len(triples), size)]
        return [(part, self._pool.submit(verify_triples, part)) for part in parts]

    def prepare(self, block: Block, state: StateView, known: Container) -> set:
        """Facts of ``block`` checked valid in parallel (see module docstring)."""
        if self._pool is None:
            return set()  # everything is checked inline by consensus
        triples, segments = self.collect(block, state, known)
        if len(block.header.vdf_checkpoints) != self.params.vdf_checkpoints - 1:
            segments = []  # consensus rejects the count itself
        if len(triples) < MIN_PARALLEL and self.params.vdf_iterations < 100_000:
            return set()  # cheaper inline
        futures = []
        n = self.workers
        chunk = max(1, -(-len(triples) // n))
        for i in range(0, len(triples), chunk):
            part = triples[i:i + chunk]
            futures.append((part, self._pool.submit(verify_triples, part)))
        if self.params.vdf_iterations >= 100_000:
            for seg in segments:
                futures.append(([seg], self._pool.submit(check_segments, [seg])))
        out = set()
        for items, future in futures:
            for item, ok in zip(items, future.result()):
                if ok:
                    out.add(item)
        return out
