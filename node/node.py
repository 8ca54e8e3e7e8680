"""The running node: chain + mempool + miner + p2p + JSON-RPC in one trio nursery.

``Node`` implements ``p2p.interface.ChainAccess``. Blocks go through
``ChainState.add_block`` in a worker thread (so the trio loop keeps serving RPC and peers
meanwhile); chain mutations are serialised by ``block_lock``, mempool mutations happen in
the trio thread over a snapshot of the tip state. Proof-of-work searches run in a worker
process.
"""

import json
import logging
import os
import time
from pathlib import Path

import trio

from consensus.block import Header
from consensus.errors import ConsensusError
from consensus.params import ChainParams
from consensus.state import get_escrow
from consensus.tx import REDEEM, Tx
from consensus.vdf import compute_vdf
from node.blockindex import FAILED, HAVE_DATA
from node.chainstate import ChainState, TipChange
from node.explorer import ExplorerData, make_app, serve_http
from node.mempool import STATELESS_REASONS, Mempool, PolicyError
from node.metrics import NodeMetrics
from node.miner import (CHUNK, IN_PROCESS_TRIES, PowWorker, build_template, header_parts,
                        next_timestamp, search_nonce)
from node.rpc import LOOPBACK_ONLY, RpcServer
from node.rpc_methods import make_methods
from node.store import ChainStore
from node.verify import Either, WorkerPool
from node.tipwatch import TipWatch
from node.ticketwatch import TicketWatch
from p2p.interface import BlockResult, BlockStatus, HeadersResult, TxResult
from p2p.network import Network
from p2p.peer import format_address

PIPELINE_HEAD = 16  # an RPC batch's first signatures, checked inline by their calls
PIPELINE_CHUNK = 12  # signatures per worker task when checking an RPC batch (pipelined)
log = logging.getLogger("node")

TEMPLATE_REFRESH_SECONDS = 5.0
MAX_WANTED = 2_000


class Node:
    """One MicroCash node (SPEC §10–§12)."""

    def __init__(self, params: ChainParams, datadir: Path, *, p2p_port: int = 0,
                 rpc_port: int = 0, connect: list[tuple[str, int]] = (),
                 mine_address: bytes | None = None, workers: int = 2,
                 p2p_host: str = "127.0.0.1", rpc_host: str = "127.0.0.1",
                 rpc_allow_ip: tuple = (), external: tuple[str, int] | None = None,
                 http_port: int | None = None, http_host: str = "127.0.0.1") -> None:
        """``p2p_host``/``rpc_host``: listen addresses; ``rpc_allow_ip``: networks the RPC
        serves (empty = loopback only); ``external``: (host, port) announced to peers
        (port 0 = the bound one); ``http_port``: the explorer and /metrics on ``http_host``
        (None: not served)."""
        self.params = params
        self.datadir = datadir
        self.store = ChainStore(datadir / "chain")
        self.store.on_fatal = lambda reason: self.request_stop()  # DESIGN "Storage faults"
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self.chain = ChainState(params, self.store)
        self.genesis_hash = self.chain.genesis_hash
        self.mempool = Mempool(params, self.genesis_hash)
        self.workers = WorkerPool(params, self.genesis_hash, workers)
        # Signatures the mempool checked are not checked again when their block connects;
        # the rest of a block's signatures and its VDF segments are checked in parallel.
        self.chain.prepare = self._prepare_block
        self.mine_address = mine_address
        self.block_lock = trio.Lock()
        self.tipwatch = TipWatch(self.chain.tip.hash, self.chain.height)  # waiting RPCs
        self.stop_requested = trio.Event()
        self._vdf_cache: dict[bytes, tuple[bytes, list[bytes]]] = {}
        # hex -> Tx decoded by the RPC batch hook, taken by its sendrawtransaction call
        self.decoded_txs: dict[str, Tx] = {}
        # signature triple -> (its chunk, the future of the workers' check of it)
        self._pending_sigs: dict[tuple, tuple[list, object]] = {}
        self._pow: PowWorker | None = None
        self.network = Network(self, host=p2p_host, port=p2p_port, connect=list(connect),
                               external=external)
        # Duplicate watch between merchants (DESIGN "Ticket watch between merchants").
        self.ticket_watch = TicketWatch(lambda eid: get_escrow(self.store.state, eid),
                                        self.genesis_hash, self.workers.verify_many,
                                        self.network.send_to_peer)
        self.network.ticket_relay = self.ticket_watch
        # Operators' view: per-node metrics; the explorer reads through rpc_methods.
        self.metrics = NodeMetrics(self)
        self.chain.on_connected = self.metrics.on_block_connected
        self.http_port, self.http_host = http_port, http_host  # None: no explorer
        self.rpc_methods = make_methods(self)
        self.rpc = RpcServer(self.metrics.instrument(self.rpc_methods), host=rpc_host,
                             port=rpc_port, cookie_path=datadir / ".cookie",
                             batch_hook=self._preverify_batch,
                             allow_ip=tuple(rpc_allow_ip) or LOOPBACK_ONLY)
        # Blocks stored but not connected (a crash or a failed write between storing a
        # block and connecting it) are connected now, as Bitcoin Core's start-up
        # ActivateBestChain does; otherwise they would block their height forever.
        change = self.chain.activate_best_chain()
        if change.connected:
            log.info("connected %d stored blocks at start-up", len(change.connected))
        self._reset_mempool(TipChange())

    # -- life cycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until ``stop`` (RPC) or cancellation; always closes the store."""
        self._trio_token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                p2p_port = await nursery.start(self.network.run)
                rpc_port = await nursery.start(self.rpc.serve)
                nursery.start_soon(self.ticket_watch.run)
                http_port = None
                if self.http_port is not None:
                    app = make_app(ExplorerData(self), self.metrics)
                    http_port = await nursery.start(serve_http, app, self.http_host,
                                                    self.http_port)
                self._write_ports(p2p_port, rpc_port, http_port)
                log.info("node up: chain %s height %d p2p %s rpc %s%s",
                         self.params.name, self.chain.height,
                         format_address(self.network.host, p2p_port),
                         format_address(self.rpc.host, rpc_port),
                         f" explorer http://{self.http_host}:{http_port}/"
                         if http_port is not None else "")
                if self.mine_address is not None:
                    nursery.start_soon(self.mine_forever, self.mine_address)
                await self.stop_requested.wait()
                log.info("stopping")
                self.rpc.close()
                with trio.move_on_after(5):
                    await trio.sleep(0.2)  # let the reply to `stop` leave
                nursery.cancel_scope.cancel()
        finally:
            if self._pow is not None:
                self._pow.close()
            self.workers.close()
            self.store.close()
            log.info("store closed; bye")

    def request_stop(self) -> None:
        """Ask ``run`` to shut down cleanly; callable from the trio thread or from any
        other thread (the block thread, when a store write fails there)."""
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:  # not in the trio thread
            if self._trio_token is None:
                raise
            self._trio_token.run_sync_soon(self.stop_requested.set)
            return
        self.stop_requested.set()

    def _write_ports(self, p2p_port: int, rpc_port: int, http_port: int | None = None) -> None:
        """``ports.json``: the bound ports, and the address local tools reach the RPC at
        (``rpc_host``: the --rpc-bind address, or loopback for a wildcard bind); ``http``
        when the explorer is served."""
        ports = {"p2p": p2p_port, "rpc": rpc_port, "p2p_host": self.network.host,
                 "rpc_host": _reachable(self.rpc.host)}
        if http_port is not None:
            ports["http"] = http_port  # the explorer and /metrics (--http-port)
        tmp = self.datadir / "ports.json.tmp"
        tmp.write_text(json.dumps(ports))
        os.replace(tmp, self.datadir / "ports.json")

    # -- VDF of the tip ------------------------------------------------------------------
    def vdf_for(self, block_hash: bytes) -> tuple[bytes, list[bytes]]:
        """``(vdf, checkpoints)`` of ``block_hash``, the ones its child must carry. The
        block thread computes it for each new tip (in a worker process on long VDFs), so
        the trio thread finds it cached."""
        cached = self._vdf_cache.get(block_hash)
        if cached is None:
            if len(self._vdf_cache) > 64:
                self._vdf_cache.clear()
            if self.params.vdf_iterations >= 100_000:
                cached = self.workers.compute_vdf(block_hash)
            else:
                cached = compute_vdf(block_hash, self.params.vdf_iterations,
                                     self.params.vdf_checkpoints)
            self._vdf_cache[block_hash] = cached
        return cached

    def _prepare_block(self, block) -> Either:
        """ChainState hook (block thread): facts of ``block`` already checked."""
        known = self.mempool.verified
        try:
            checked = self.workers.prepare(block, self.store.state, known)
        except Exception as exc:  # a broken worker pool: consensus checks everything inline
            log.warning("worker pre-check failed (%s); checking inline", exc)
            checked = set()
        return Either(known, checked)

    def _add_block_work(self, raw: bytes):
        """Block thread: ``add_block``, then the VDF its child needs."""
        result, change = self.chain.add_block(raw)
        if change.connected or change.disconnected:
            self.vdf_for(self.chain.tip.hash)
        return result, change

    def _reset_mempool(self, change: TipChange) -> None:
        readd = [tx for block in reversed(change.disconnected) for tx in block.txs[1:]]
        confirmed = {tx.txid() for block in change.connected for tx in block.txs}
        vdf, _ = self.vdf_for(self.chain.tip.hash)
        written = None if change.disconnected else change.written_keys
        self.mempool.reset(self.store.snapshot_state(), self.chain.height, vdf, readd, confirmed,
                           written)

    def _after_tip_change(self, change: TipChange) -> None:
        if not change.connected and not change.disconnected:
            return
        if change.disconnected:
            log.info("reorg: %d blocks disconnected, %d connected, tip %d",
                     len(change.disconnected), len(change.connected), self.chain.height)
        self.metrics.on_tip_change(change.connected, change.disconnected)
        self._reset_mempool(change)
        self._watch_blocks(change)
        self.network.announce_block(self.chain.tip.hash)
        self.tipwatch.notify(self.chain.tip.hash, self.chain.height)  # waiting RPCs

    def _watch_blocks(self, change: TipChange) -> None:
        """Ticket watch: REDEEMs of connected blocks may collide with announced tickets;
        tickets of refunded or broken escrows are forgotten."""
        if getattr(self, "ticket_watch", None) is None:
            return
        for block in change.connected:
            for tx in block.txs:
                if tx.kind == REDEEM:
                    self.ticket_watch.observe_redeem(tx.tickets(), "block")
        self.ticket_watch.prune()

    # -- blocks --------------------------------------------------------------------------
    async def process_block(self, raw: bytes) -> BlockResult:
        """Check, store and (if best) connect a block given as bytes (SPEC §10); the
        work runs in a worker thread, one block at a time."""
        async with self.block_lock:
            result, change = await trio.to_thread.run_sync(self._add_block_work, raw)
            self._after_tip_change(change)
            return result

    # -- transactions --------------------------------------------------------------------
    async def _preverify_batch(self, batch: list) -> None:
        """RPC batch hook: check the signatures of a batch's ``sendrawtransaction`` calls
        in the worker processes, so accepting them one by one skips that part."""
        triples = []
        for item in batch:
            try:
                if item.get("method") != "sendrawtransaction":
                    continue
                hex_tx = item["params"][0]
                tx = Tx.decode(bytes.fromhex(hex_tx))
            except Exception:  # anything malformed is judged (and reported) by the call
                continue
            if len(self.decoded_txs) >= 20_000:
                self.decoded_txs.clear()
            self.decoded_txs[hex_tx] = tx  # the call takes it instead of decoding again
            triple = (tx.sender, tx.signing_message(self.genesis_hash), tx.sig)
            if triple not in self.mempool.verified:
                triples.append(triple)
        if len(triples) < 16:
            return
        if not self.workers.workers:
            valid = await trio.to_thread.run_sync(self.workers.verify_many, triples)
            self.mempool.verified.update(valid)
            return
        # Pipelined: the chunks are checked in the workers while the calls run; a call
        # whose chunk is not back yet waits for it (``_take_pending``: at most one
        # chunk's time, a millisecond or two, as the chunks before it are back).
        # The first few are left to the calls (checked inline): a worker round trip
        # costs more than they do, and the workers meanwhile start on the rest.
        chunks = self.workers.submit_chunks(triples[PIPELINE_HEAD:], PIPELINE_CHUNK)
        if len(self._pending_sigs) > 20_000:
            self._pending_sigs.clear()
        for chunk in chunks:
            for triple in chunk[0]:
                self._pending_sigs[triple] = chunk

    def _take_pending(self, triple: tuple) -> None:
        """If ``triple`` is in a chunk still being checked by the workers, wait for that
        chunk (a few signatures' time: the chunks before it were waited for already)
        and put its valid triples into the verified set."""
        chunk = self._pending_sigs.pop(triple, None)
        if chunk is None:
            return
        part, future = chunk
        try:
            results = future.result(timeout=30)
        except Exception as exc:  # a broken pool: the call checks the signature inline
            log.warning("worker signature check failed (%s); checking inline", exc)
            results = [False] * len(part)
        for item, ok in zip(part, results):
            self._pending_sigs.pop(item, None)
            if ok:
                self.mempool.verified.add(item)

    def accept_tx(self, tx: Tx) -> bytes:
        """Add ``tx`` to the mempool and announce it; raises ``ConsensusError`` or
        ``PolicyError`` with the reject reason."""
        txid = tx.txid()
        if self._pending_sigs:
            self._take_pending((tx.sender, tx.signing_message(self.genesis_hash), tx.sig))
        if self.store.get_tx_height(txid) is not None:
            raise PolicyError("txn-already-known")
        self.mempool.add(tx)
        self.network.announce_tx(txid)
        if tx.kind == REDEEM:  # a colliding REDEEM is a duplicate (DESIGN "Ticket watch")
            self.ticket_watch.observe_redeem(tx.tickets(), "mempool")
        return txid

    # -- ChainAccess (p2p) ---------------------------------------------------------------
    def best_height(self) -> int:
        """ChainAccess: height of the connected tip."""
        return self.chain.height

    def best_hash(self) -> bytes:
        """ChainAccess: hash of the connected tip."""
        return self.chain.tip.hash

    def get_locator(self) -> list[bytes]:
        """ChainAccess: block locator of the best chain (SPEC §11)."""
        return self.chain.get_locator()

    def get_headers_after(self, locator: list[bytes], stop_hash: bytes, limit: int) -> list[bytes]:
        """ChainAccess: encoded main-chain headers after the locator's fork point."""
        return self.chain.get_headers_after(locator, stop_hash, limit)

    def has_block(self, block_hash: bytes) -> bool:
        """ChainAccess: whether the block is stored (or known invalid)."""
        entry = self.chain.entries.get(block_hash)
        return entry is not None and bool(entry.status & (HAVE_DATA | FAILED))

    def get_block(self, block_hash: bytes) -> bytes | None:
        """ChainAccess: canonical bytes of a stored block."""
        return self.store.get_block(block_hash)

    def has_tx(self, txid: bytes) -> bool:
        """ChainAccess: whether the tx is pooled or confirmed."""
        return txid in self.mempool or self.store.get_tx_height(txid) is not None

    def get_mempool_tx(self, txid: bytes) -> bytes | None:
        """ChainAccess: canonical bytes of a pooled tx."""
        tx = self.mempool.get(txid)
        return None if tx is None else tx.encode()

    async def submit_headers(self, headers: list[bytes]) -> HeadersResult:
        """ChainAccess: index headers (headers-first sync); which blocks to fetch."""
        last_entry, last_hash, new = None, None, []
        async with self.block_lock:
            try:
                for i, raw in enumerate(headers):
                    try:
                        header = Header.decode(raw)
                    except ConsensusError as exc:
                        return HeadersResult([], last_hash, exc.reason)
                    last_hash = header.hash()
                    known = last_hash in self.chain.entries
                    entry, result = self.chain.add_header(header, persist=False)
                    if result is not None:
                        if result.status is BlockStatus.INVALID:
                            return HeadersResult([], last_hash, result.reason)
                        break  # orphan or not-yet: stop here, no ban
                    if not known:
                        new.append(entry)
                    last_entry = entry
                    if i % 200 == 199:
                        await trio.sleep(0)
            finally:
                self.store.put_index_rows([(e.hash, e.header_bytes, e.status, e.seq)
                                           for e in new])
        wanted = self.chain.missing_blocks(last_entry, MAX_WANTED) if last_entry else []
        return HeadersResult(wanted, last_hash)

    async def submit_block(self, block: bytes) -> BlockResult:
        """ChainAccess: process a block from a peer (SPEC §10)."""
        return await self.process_block(block)

    async def submit_tx(self, tx: bytes) -> TxResult:
        """ChainAccess: offer a peer's tx to the mempool; ``invalid`` only for stateless failures."""
        try:
            decoded = Tx.decode(tx)
        except ConsensusError as exc:
            return TxResult(False, b"", exc.reason, invalid=True)
        txid = decoded.txid()
        try:
            self.accept_tx(decoded)
        except ConsensusError as exc:
            return TxResult(False, txid, exc.reason, invalid=exc.reason in STATELESS_REASONS)
        except PolicyError as exc:
            return TxResult(False, txid, exc.reason)
        return TxResult(True, txid)

    # -- mining --------------------------------------------------------------------------
    async def mine_block(self, address: bytes, *, give_up_on_new_tip: bool) -> bytes | None:
        """Build a template on the tip, find a nonce, submit; returns the block hash, or
        ``None`` if the tip moved (when ``give_up_on_new_tip``) or the template aged."""
        tip = self.chain.tip
        ctx = self.chain.header_context(tip)
        if tip.hash in self._vdf_cache:
            vdf, checkpoints = self._vdf_cache[tip.hash]
        else:  # not computed yet (start-up, a tip from elsewhere): never on the trio thread
            vdf, checkpoints = await trio.to_thread.run_sync(self.vdf_for, tip.hash)
        txs = self.mempool.select(self.params.max_block_bytes - 20_000)
        template = build_template(tip.height + 1, tip.hash, next_timestamp(ctx.median_time_past),
                                  ctx.expected_target, vdf, checkpoints, txs, address,
                                  self.params.block_reward)
        prefix, suffix = header_parts(template.header)
        target = template.header.target
        nonce = search_nonce(prefix, suffix, target, 0, IN_PROCESS_TRIES)
        start, began = IN_PROCESS_TRIES, trio.current_time()
        while nonce is None:
            if give_up_on_new_tip and (self.chain.tip is not tip or
                                       trio.current_time() - began > TEMPLATE_REFRESH_SECONDS):
                return None
            if self._pow is None:
                self._pow = PowWorker()
            nonce = await trio.to_thread.run_sync(self._pow.search, prefix, suffix, target,
                                                  start, CHUNK, abandon_on_cancel=True)
            start += CHUNK
        result = await self.process_block(template.with_nonce(nonce).encode())
        if result.status is BlockStatus.INVALID:
            log.error("mined an invalid block: %s", result.reason)
            return None
        return result.block_hash if result.status is BlockStatus.CONNECTED else None

    async def generate(self, n: int, address: bytes) -> list[bytes]:
        """Mine ``n`` blocks on demand (RPC ``generate``)."""
        hashes = []
        for _ in range(n * 20):
            if len(hashes) == n:
                break
            block_hash = await self.mine_block(address, give_up_on_new_tip=False)
            if block_hash is not None:
                hashes.append(block_hash)
        return hashes

    async def mine_forever(self, address: bytes) -> None:
        """``--mine``: keep extending the tip; the PoW runs in a worker process."""
        log.info("mining to %s", address.hex())
        while True:
            # Never run ahead of the clock: on easy targets (regtest) this is what keeps
            # a mining node from flooding its peers with blocks.
            ahead = self.chain.header_context(self.chain.tip).median_time_past + 1 - time.time()
            if ahead > 0:
                await trio.sleep(min(ahead, 1.0))
                continue
            await self.mine_block(address, give_up_on_new_tip=True)
            await trio.sleep(0)


def _reachable(host: str) -> str:
    """Where a local client dials a server bound to ``host`` (wildcards mean loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
