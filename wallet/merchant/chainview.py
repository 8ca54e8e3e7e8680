"""The merchant's view of the chain, read from a node through its JSON-RPC (SPEC §12).

The merchant service (SPEC §13, §4.1) and the auto-redeemer (SPEC §6, §7) never touch a
node's internals: they ask a ``ChainView`` for the best height, escrow states, draws,
redeemed records, channels (SPEC §16), and hand it REDEEM / CHANNEL_CLOSE transactions to
relay. ``RpcChainView`` is the real
one, backed by a synchronous ``wallet.rpcclient.RpcClient`` whose calls run in worker
threads under a timeout so a stalled node never blocks the trio event loop. Tests pass any
object with the same methods (see ``ChainView``).

Failures come out as two exception types: ``NodeRejected`` (the node answered with a
SPEC reject reason, e.g. ``ticket-already-redeemed``) and ``NodeUnavailable`` (no answer,
a timeout, or an answer that does not parse).
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from typing import Any, Protocol

import trio

from consensus.channel import ChannelState
from consensus.errors import ConsensusError
from consensus.escrow import EscrowState
from consensus.micropay import MpEscrowState
from consensus.params import ChainParams
from wallet.rpcclient import RpcClient, RpcConnectionError, RpcError, resolve_params

log = logging.getLogger(__name__)

RPC_TIMEOUT = 10.0  # seconds one RPC call may take before the node counts as unavailable
HEIGHT_TTL = 0.5  # seconds a best height read is reused
ESCROW_CACHE_SIZE = 4096  # escrow states (or "unknown" answers) kept in memory
RPC_THREADS = 4  # worker threads running RPC calls at once
WAIT_SECONDS = 10.0  # longest one ``waitfornewblock`` call (a fresh call follows)
FALLBACK_POLL = 0.5  # seconds slept instead when the node has no ``waitfornewblock``
METHOD_NOT_FOUND = -32601  # JSON-RPC 2.0: an older node without the waiting RPCs
RPC_INVALID_PARAMETER = -8  # the node's code for an argument with a bad value (node.jsonrpc)
HASH_SIZE = 32


class NodeError(Exception):
    """Base of the errors a ``ChainView`` raises."""


class NodeUnavailable(NodeError):
    """The node did not answer in time, refused the connection, or sent a malformed reply."""


class NodeRejected(NodeError):
    """The node answered with an error; ``reason`` is the SPEC reject reason (SPEC §12).

    ``code`` is the JSON-RPC error code when known (``None`` otherwise).
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ChainView(Protocol):
    """What the merchant side needs from a node (SPEC §12). All reads may be cached.

    Attributes: ``genesis_hash`` (32 bytes, identifies the chain), ``params`` (the chain's
    ``ChainParams``, needed for ``t_draw``/``t_expire``). Methods raise ``NodeUnavailable``
    when the node cannot be reached and ``NodeRejected`` when it answers with an error.
    """

    genesis_hash: bytes
    params: ChainParams

    async def height(self, fresh: bool = False) -> int:
        """Best block height ``t`` (the current round is ``t + 1``)."""
        ...

    async def escrow(self, escrow_id: bytes) -> EscrowState | None:
        """The escrow's state at the best block, or ``None`` if unknown (or refunded)."""
        ...

    async def draw(self, escrow_id: bytes, group: int) -> list[int] | None:
        """Winning seqnos of draw ``group`` (SPEC §6), or ``None`` before block t_draw+1."""
        ...

    async def redeemed(self, escrow_id: bytes) -> list[tuple[int, int, int]]:
        """``[(seqno, merchant_index, height), ...]`` redeemed from the escrow (SPEC §7)."""
        ...

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        """Relay an encoded transaction; returns its 32-byte txid."""
        ...

    async def channel(self, channel_id: bytes) -> ChannelState | None:
        """The open payment channel (SPEC §16), or ``None`` once closed or expired."""
        ...

    # Optional: ``async def estimate_feerate(self, target_blocks: int) -> int`` (units/byte,
    # RPC ``estimatefee``); without it the redeemer pays its fee floor.
    async def mp_escrow(self, mp_escrow_id: bytes) -> MpEscrowState | None:
        """The MP escrow (SPEC §15), or ``None`` once claimed or refunded."""
        ...

    # Optional: ``async def wait_for_new_block(self, timeout: float, after: int | None)
    # -> int`` — return the best height once the tip differs from the last one this view
    # saw (at once if it saw a height other than ``after``), or after ``timeout`` seconds
    # (the redeemer polls views without it).

    async def transaction_status(self, txid: bytes) -> tuple[str, int | None] | None:
        """``("mempool", None)``, ``("confirmed", height)`` or ``None`` when unknown."""
        ...


def _malformed(method: str, result: Any) -> NodeUnavailable:
    return NodeUnavailable(f"malformed {method} reply: {str(result)[:200]}")


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _parse_hash(method: str, value: Any) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise _malformed(method, value) from None
    if len(raw) != HASH_SIZE:
        raise _malformed(method, value)
    return raw


async def call_rpc(
    rpc: RpcClient,
    method: str,
    *params: Any,
    timeout: float = RPC_TIMEOUT,
    limiter: trio.CapacityLimiter | None = None,
) -> Any:
    """Run one synchronous ``rpc.call`` in a worker thread, bounded by ``timeout`` seconds.

    Raises ``NodeUnavailable`` on timeout or connection failure, ``NodeRejected`` (with the
    SPEC reject reason from ``error.message``) when the node answers with an error.
    """
    call = functools.partial(rpc.call, method, *params)
    try:
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)
    except trio.TooSlowError:
        raise NodeUnavailable(f"{method}: no answer within {timeout} s") from None
    except RpcConnectionError as exc:
        raise NodeUnavailable(f"{method}: {exc}") from None
    except RpcError as exc:
        raise NodeRejected(str(exc.message), getattr(exc, "code", None)) from None


class RpcChainView:
    """``ChainView`` over a node's JSON-RPC, with short-lived caches (SPEC §12, §13).

    The best height is re-read at most every ``height_ttl`` seconds. An escrow state (or
    the fact that it is unknown) is reused while the best height is unchanged: its
    parameters never change, and its balances and ``broken`` flag can only change with a
    new block. Build with ``await RpcChainView.create(rpc)``.
    """

    def __init__(
        self,
        rpc: RpcClient,
        genesis_hash: bytes,
        params: ChainParams,
        *,
        timeout: float = RPC_TIMEOUT,
        height_ttl: float = HEIGHT_TTL,
    ) -> None:
        self._rpc = rpc
        self.genesis_hash = genesis_hash
        self.params = params
        self._timeout = timeout
        self._height_ttl = height_ttl
        self._limiter = trio.CapacityLimiter(RPC_THREADS)
        self._height: int | None = None
        self._height_at = 0.0
        self._best_hash: str | None = None  # tip hash (hex) of the last height read
        self.can_wait = True  # False once the node answered method-not-found
        self._escrows: collections.OrderedDict[bytes, tuple[int, EscrowState | None]] = (
            collections.OrderedDict()
        )

    @classmethod
    async def create(
        cls, rpc: RpcClient, params: ChainParams | None = None, *, timeout: float = RPC_TIMEOUT
    ) -> RpcChainView:
        """Ask the node's ``getinfo`` for the genesis hash and (unless given) the profile.

        Raises ``NodeUnavailable`` if the node cannot be reached or reports an unknown chain.
        """
        info = await call_rpc(rpc, "getinfo", timeout=timeout)
        if not isinstance(info, dict):
            raise _malformed("getinfo", info)
        genesis_hash = _parse_hash("getinfo", info.get("genesis_hash"))
        if params is None:
            chain = info.get("chain")
            if not isinstance(chain, str):
                raise _malformed("getinfo", info)
            try:
                params = resolve_params(chain)
            except ValueError as exc:
                raise NodeUnavailable(str(exc)) from None
        view = cls(rpc, genesis_hash, params, timeout=timeout)
        view._store_height("getinfo", info.get("height"), info.get("best_hash"))
        return view

    async def _call(self, method: str, *params: Any) -> Any:
        return await call_rpc(
            self._rpc, method, *params, timeout=self._timeout, limiter=self._limiter
        )

    def _store_height(self, method: str, value: Any, best_hash: Any = None) -> int:
        if not _is_uint(value):
            raise _malformed(method, value)
        if best_hash is not None:
            self._best_hash = _parse_hash(method, best_hash).hex()
        if self._height is not None and value != self._height:
            self._escrows.clear()  # balances and ``broken`` may have changed
        self._height = value
        self._height_at = time.monotonic()
        return value

    async def height(self, fresh: bool = False) -> int:
        """Best height, re-read from ``getinfo`` at most every ``height_ttl`` seconds, or
        now when ``fresh`` (a merchant judges each ticket request by the current tip)."""
        if (not fresh and self._height is not None
                and time.monotonic() - self._height_at < self._height_ttl):
            return self._height
        info = await self._call("getinfo")
        if not isinstance(info, dict):
            raise _malformed("getinfo", info)
        return self._store_height("getinfo", info.get("height"), info.get("best_hash"))

    async def wait_for_new_block(self, timeout: float = WAIT_SECONDS,
                                 after: int | None = None) -> int:
        """Block until the tip differs from the one this view last saw, or ``timeout``
        seconds pass; return the best height (issue 8: push, not polling). With
        ``after`` (the height the caller last handled), return at once if this view
        already saw another height, e.g. read meanwhile by the ticket service.

        Uses ``waitfornewblock(ms, current_tip)``, so a block found between two calls is
        never missed. A node without it (method-not-found) is polled: sleep
        ``FALLBACK_POLL`` s, then ``getinfo``. The wait is cut to half the RPC client's
        own HTTP timeout. Raises ``NodeUnavailable`` / ``NodeRejected`` like every read.
        """
        if self._best_hash is None:
            await self.height(fresh=True)
        if after is not None and self._height is not None and self._height != after:
            return self._height
        if self.can_wait:
            seconds = max(0.05, min(timeout, getattr(self._rpc, "timeout", 30) / 2))
            try:
                tip = await call_rpc(self._rpc, "waitfornewblock", int(seconds * 1000),
                                     self._best_hash, timeout=seconds + self._timeout,
                                     limiter=self._limiter)
            except NodeRejected as exc:
                if exc.code != METHOD_NOT_FOUND:
                    raise
                log.info("node has no waitfornewblock: polling every %g s", FALLBACK_POLL)
                self.can_wait = False
            else:
                if not isinstance(tip, dict):
                    raise _malformed("waitfornewblock", tip)
                return self._store_height("waitfornewblock", tip.get("height"),
                                          tip.get("hash"))
        await trio.sleep(min(timeout, FALLBACK_POLL))
        return await self.height(fresh=True)

    async def escrow(self, escrow_id: bytes) -> EscrowState | None:
        """``getescrow`` parsed by ``EscrowState.from_rpc``; ``None`` when unknown.

        Cached until the best height changes (at most ``ESCROW_CACHE_SIZE`` entries).
        """
        height = await self.height()
        cached = self._escrows.get(escrow_id)
        if cached is not None and cached[0] == height:
            self._escrows.move_to_end(escrow_id)
            return cached[1]
        result = await self._call("getescrow", escrow_id.hex())
        state: EscrowState | None = None
        if result is not None:
            if not isinstance(result, dict):
                raise _malformed("getescrow", result)
            try:
                state = EscrowState.from_rpc(result)
            except (ConsensusError, KeyError, TypeError, ValueError):
                raise _malformed("getescrow", result) from None
        self._escrows[escrow_id] = (height, state)
        self._escrows.move_to_end(escrow_id)
        while len(self._escrows) > ESCROW_CACHE_SIZE:
            self._escrows.popitem(last=False)
        return state

    async def draw(self, escrow_id: bytes, group: int) -> list[int] | None:
        """``getdraw`` winners, or ``None`` while the node answers ``draw-not-ready``."""
        try:
            result = await self._call("getdraw", escrow_id.hex(), group)
        except NodeRejected as exc:
            if exc.reason == "draw-not-ready":
                return None
            raise
        winners = result.get("winners") if isinstance(result, dict) else None
        if not isinstance(winners, list) or not all(_is_uint(s) for s in winners):
            raise _malformed("getdraw", result)
        return list(winners)

    async def redeemed(self, escrow_id: bytes) -> list[tuple[int, int, int]]:
        """``getredeemed`` as ``(seqno, merchant_index, height)`` tuples."""
        result = await self._call("getredeemed", escrow_id.hex())
        if not isinstance(result, list):
            raise _malformed("getredeemed", result)
        records = []
        for item in result:
            if not (isinstance(item, list) and len(item) == 3 and all(map(_is_uint, item))):
                raise _malformed("getredeemed", item)
            records.append((item[0], item[1], item[2]))
        return records

    async def channel(self, channel_id: bytes) -> ChannelState | None:
        """``getchannel`` parsed by ``ChannelState.from_rpc`` (not cached: a payee judges
        each voucher by the current state); ``None`` when closed, cheated or expired."""
        result = await self._call("getchannel", channel_id.hex())
        if result is None:
            return None
        if not isinstance(result, dict):
            raise _malformed("getchannel", result)
        try:
            return ChannelState.from_rpc(result)
        except (KeyError, TypeError, ValueError):
            raise _malformed("getchannel", result) from None

    async def mp_escrow(self, mp_escrow_id: bytes) -> MpEscrowState | None:
        """``getmpescrow`` parsed by ``MpEscrowState.from_rpc`` (not cached: a payee judges
        each MICROPAY ticket by the current state); ``None`` once claimed or refunded."""
        result = await self._call("getmpescrow", mp_escrow_id.hex())
        if result is None:
            return None
        if not isinstance(result, dict):
            raise _malformed("getmpescrow", result)
        try:
            return MpEscrowState.from_rpc(result)
        except (KeyError, TypeError, ValueError):
            raise _malformed("getmpescrow", result) from None

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        """``sendrawtransaction``; the txid, or ``NodeRejected`` with the reject reason."""
        result = await self._call("sendrawtransaction", raw.hex())
        return _parse_hash("sendrawtransaction", result)

    async def estimate_feerate(self, target_blocks: int) -> int:
        """``estimatefee(target_blocks)``'s ``feerate`` (whole units/byte); ``NodeRejected``
        from a node without it (method-not-found)."""
        result = await self._call("estimatefee", target_blocks)
        rate = result.get("feerate") if isinstance(result, dict) else None
        if not _is_uint(rate):
            raise _malformed("estimatefee", result)
        return rate

    async def transaction_status(self, txid: bytes) -> tuple[str, int | None] | None:
        """``gettransaction`` as ``(status, height)``; ``None`` when the node knows no such tx."""
        result = await self._call("gettransaction", txid.hex())
        if result is None:
            return None
        if not isinstance(result, dict):
            raise _malformed("gettransaction", result)
        status = result.get("status")
        if status == "mempool":
            return ("mempool", None)
        if status == "confirmed" and _is_uint(result.get("height")):
            return ("confirmed", result["height"])
        raise _malformed("gettransaction", result)
