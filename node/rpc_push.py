"""RPC methods that push instead of being polled, and fee estimation (issue 8 points 3, 6).

``waitfornewblock`` / ``waitforblockheight`` (bitcoind's semantics, over
``node.tipwatch.TipWatch``), ``listescrows`` (over ``node.escrowindex.EscrowIndex``) and
``estimatefee`` (``node.feeestimate``). A class rather than more closures in
``make_methods``; ``table()`` gives the name → bound method entries it merges.
DESIGN "Push RPCs and estimatefee".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from consensus.address import decode_address
from node.escrowindex import EscrowIndex
from node.feeestimate import FeeEstimator

if TYPE_CHECKING:
    from node.node import Node


def parse_timeout_ms(timeout: int) -> float:
    """Seconds from a bitcoind-style wait timeout in milliseconds (0 = no timeout, which
    ``TipWatch`` caps); ``ValueError`` if negative."""
    if timeout < 0:
        raise ValueError("timeout must be >= 0 (milliseconds, 0 = no timeout)")
    return timeout / 1000


def _parse_hash(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{what} must be 64 hex digits")
    return raw


def _tip_json(tip: tuple[bytes, int]) -> dict:
    return {"hash": tip[0].hex(), "height": tip[1]}


class PushMethods:
    """The four methods bound to ``node`` (its ``tipwatch``, ``chain``, ``store``,
    ``mempool`` and ``params``)."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.escrow_index = EscrowIndex()
        self.fee_estimator = FeeEstimator(node.params.max_block_bytes)

    def table(self) -> dict[str, Callable]:
        """``{name: bound method}`` for the JSON-RPC dispatcher."""
        return {f.__name__: f for f in (self.waitfornewblock, self.waitforblockheight,
                                        self.listescrows, self.estimatefee)}

    async def waitfornewblock(self, timeout: int = 0, current_tip: str | None = None) -> dict:
        """bitcoind's: wait until the tip differs from ``current_tip`` (hex; default: the
        tip when called) or ``timeout`` ms pass (0 = no timeout, capped at
        ``tipwatch.MAX_WAIT_SECONDS``); ``{hash, height}`` of the tip then."""
        watch = self.node.tipwatch
        seconds = parse_timeout_ms(timeout)
        old = (_parse_hash(current_tip, "current_tip") if current_tip is not None
               else watch.tip_hash)
        return _tip_json(await watch.wait_for(lambda h, _: h != old, seconds))

    async def waitforblockheight(self, height: int, timeout: int = 0) -> dict:
        """bitcoind's: wait until the tip height is ≥ ``height`` or ``timeout`` ms pass
        (0 = no timeout, capped); ``{hash, height}`` of the tip then."""
        if height < 0:
            raise ValueError("height must be >= 0")
        seconds = parse_timeout_ms(timeout)
        return _tip_json(await self.node.tipwatch.wait_for(lambda _, t: t >= height, seconds))

    def listescrows(self, selector: dict | str, address: str | None = None) -> list:
        """Live escrows of an owner or naming a merchant, each like ``getescrow``'s result,
        by created_height: params ``[{"owner": ADDRESS}]``, ``[{"merchant": ADDRESS}]``,
        or ``["owner" | "merchant", ADDRESS]`` (bech32m or hex). ``ValueError`` (-8) for
        anything else."""
        if isinstance(selector, dict):
            if address is not None or len(selector) != 1:
                raise ValueError('expected {"owner": ADDRESS} or {"merchant": ADDRESS}')
            (role, address), = selector.items()
        else:
            role = selector
        if role not in ("owner", "merchant") or not isinstance(address, str):
            raise ValueError('expected {"owner": ADDRESS}, {"merchant": ADDRESS} or '
                             '["owner"|"merchant", ADDRESS]')
        key = decode_address(address)
        chain, state = self.node.chain, self.node.store.state
        self.escrow_index.sync(chain.main_hashes, chain.get_block, state)
        found = self.escrow_index.lookup(state, **{role: key})
        return [{"escrow_id": eid.hex(), **escrow.to_json()} for eid, escrow in found]

    def estimatefee(self, target_blocks: int = 1) -> dict:
        """Fee per byte (units/byte) for inclusion within ``target_blocks`` (1..1008), and
        for a typical 1-ticket REDEEM, from the mempool and recent blocks; see
        ``node.feeestimate``. ``ValueError`` (-8) for a target out of range."""
        mempool = self.node.mempool
        pool = [(e.tx.fee, e.size) for e in mempool.entries.values()]
        chain = self.node.chain
        return self.fee_estimator.estimate(target_blocks, pool, chain.main_hashes, chain.get_block,
                                           full_pool=len(pool) >= mempool.max_txs)
