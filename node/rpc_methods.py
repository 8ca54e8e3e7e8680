"""The node's JSON-RPC methods (SPEC §12): thin formatting over chain, state and mempool.

Hashes, ids, addresses and raw objects are hex strings; addresses are also accepted in
bech32m. Consensus rejects surface as ``ConsensusError`` (the RPC layer puts the reason in
``error.message``); policy rejects as ``RpcError(-26, reason)``.
"""

from typing import TYPE_CHECKING, Callable

from consensus.address import decode_address, encode_address
from consensus.channel import get_channel
from consensus.errors import ConsensusError
from consensus.escrow import compute_t_draw
from consensus.lottery import compute_winners
from consensus.micropay import get_mp_escrow
from consensus.state import (compute_state_hash, get_account, get_burned, get_escrow,
                             get_issued, iter_redeemed)
from consensus.transition import get_draw_value
from consensus.tx import Tx
from node.jsonrpc import RpcError
from node.mempool import PolicyError
from node.rpc_push import PushMethods
from node.rpc_watch import WatchMethods

if TYPE_CHECKING:
    from node.node import Node

RPC_MISC_ERROR = -1
RPC_INVALID_PARAMETER = -8
RPC_NOT_FOUND = -5
RPC_VERIFY_REJECTED = -26


def parse_hash(text: str, what: str = "hash") -> bytes:
    """32 bytes from 64 hex digits; ``ValueError`` otherwise."""
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        raise ValueError(f"{what} must be 64 hex digits") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 64 hex digits")
    return raw


def parse_address(text: str) -> bytes:
    """An address in bech32m or hex; ``ValueError`` otherwise."""
    return decode_address(text)


def make_methods(node: "Node") -> dict[str, Callable]:
    """The SPEC §12 method table bound to ``node``."""
    chain, store = node.chain, node.store

    def getinfo() -> dict:
        """SPEC §12: chain, height, best_hash, genesis_hash, peers, mempool, target, burned (+ supply)."""
        return {"chain": node.params.name, "height": chain.height,
                "best_hash": chain.tip.hash.hex(), "genesis_hash": node.genesis_hash.hex(),
                "peers": node.network.peer_count(), "mempool": len(node.mempool),
                "target": chain.tip.header.target.to_bytes(32, "big").hex(),
                "burned": get_burned(store.state), "supply": get_issued(store.state)}

    def getblockhash(height: int) -> str:
        """SPEC §12: main-chain block hash at ``height``."""
        if not 0 <= height <= chain.height:
            raise RpcError(RPC_INVALID_PARAMETER, "block height out of range")
        return chain.hash_at(height).hex()

    def getblock(hash_or_height, verbosity: int = 1) -> dict | str:
        """SPEC §12: header fields by name plus hash, size, txids (by hash or height).

        ``verbosity`` 0 returns the block's canonical bytes as hex instead (bitcoind's
        ``getblock hash 0``), so a tool can read every transaction from the chain itself.
        """
        if verbosity not in (0, 1) or isinstance(verbosity, bool):
            raise ValueError("verbosity must be 0 (raw hex) or 1 (fields)")
        if isinstance(hash_or_height, int) and not isinstance(hash_or_height, bool):
            block_hash = bytes.fromhex(getblockhash(hash_or_height))
        elif isinstance(hash_or_height, str):
            block_hash = parse_hash(hash_or_height, "block hash")
        else:
            raise ValueError("expected a block hash or height")
        raw = store.get_block(block_hash)
        if raw is None:
            raise RpcError(RPC_NOT_FOUND, "block not found")
        if verbosity == 0:
            return raw.hex()
        block = chain.get_block(block_hash)
        h = block.header
        entry = chain.entries.get(block_hash)
        return {"version": h.version, "height": h.height, "prev_hash": h.prev_hash.hex(),
                "timestamp": h.timestamp, "target": h.target.to_bytes(32, "big").hex(),
                "nonce": h.nonce, "tx_root": h.tx_root.hex(), "vdf": h.vdf.hex(),
                "vdf_checkpoints": [c.hex() for c in h.vdf_checkpoints],
                "hash": block_hash.hex(), "size": len(raw),
                "txids": [tx.txid().hex() for tx in block.txs],
                "in_best_chain": entry is not None and chain.is_on_main(entry)}

    def getaccount(address: str) -> dict:
        """SPEC §12: ``{address, balance, nonce}`` (balance in units)."""
        addr = parse_address(address)
        acct = get_account(store.state, addr)
        return {"address": encode_address(addr), "balance": acct.balance, "nonce": acct.nonce}

    def getescrow(escrow_id: str) -> dict | None:
        """SPEC §12: escrow state (§3.2) plus N and groups, or null."""
        escrow = get_escrow(store.state, parse_hash(escrow_id, "escrow_id"))
        return None if escrow is None else {"escrow_id": escrow_id.lower(), **escrow.to_json()}

    def getdraw(escrow_id: str, group: int) -> dict:
        """SPEC §12: ``{t_draw, vdf, winners}`` of a group; ``draw-not-ready`` before t_draw + 1."""
        eid = parse_hash(escrow_id, "escrow_id")
        escrow = get_escrow(store.state, eid)
        if escrow is None:
            raise ConsensusError("unknown-escrow")
        if not 0 <= group < escrow.groups:
            raise ValueError(f"group must be in 0..{escrow.groups - 1}")
        v = get_draw_value(store.state, node.params, escrow, group)
        if v is None:
            raise RpcError(RPC_MISC_ERROR, "draw-not-ready")
        winners = compute_winners(v, eid, group, escrow.draw_size, escrow.winners_per_draw)
        return {"t_draw": compute_t_draw(node.params, escrow, group), "vdf": v.hex(),
                "winners": winners}

    def getredeemed(escrow_id: str) -> list:
        """SPEC §12: ``[[seqno, merchant_index, height], ...]``; [] once refunded."""
        eid = parse_hash(escrow_id, "escrow_id")
        return [[s, m, h] for s, m, h in iter_redeemed(store.state, eid)]

    def sendrawtransaction(hex_tx: str) -> str:
        """SPEC §12: validate and pool a hex transaction; its txid or the reject reason."""
        tx = node.decoded_txs.pop(hex_tx, None)  # decoded already by the batch hook
        if tx is None:
            try:
                raw = bytes.fromhex(hex_tx)
            except (ValueError, TypeError):
                raise ConsensusError("bad-encoding", "not hex") from None
            tx = Tx.decode(raw)
        try:
            return node.accept_tx(tx).hex()
        except PolicyError as exc:
            raise RpcError(RPC_VERIFY_REJECTED, exc.reason) from None

    def gettransaction(txid: str) -> dict | None:
        """SPEC §12: ``{status, height?}`` (+ block_hash, confirmations) or null."""
        tid = parse_hash(txid, "txid")
        if tid in node.mempool:
            return {"status": "mempool"}
        height = store.get_tx_height(tid)
        if height is None:
            return None
        return {"status": "confirmed", "height": height, "block_hash": chain.hash_at(height).hex(),
                "confirmations": chain.height - height + 1}

    def getrawmempool() -> list:
        """SPEC §12: pooled txids in acceptance order."""
        return [t.hex() for t in node.mempool.txids()]

    def getpeerinfo() -> list:
        """SPEC §12: ``[{address, height, inbound}, ...]``."""
        return node.network.peer_info()

    def addnode(hostport: str) -> bool:
        """SPEC §12: keep a connection to ``"host:port"``."""
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port")
        node.network.add_node(host, int(port))
        return True

    async def generate(n: int, address: str) -> list:
        """SPEC §12: mine ``n`` blocks now, paying ``address``; their hashes."""
        if not 0 < n <= 10_000:
            raise ValueError("n must be in 1..10000")
        return [h.hex() for h in await node.generate(n, parse_address(address))]

    def getstatehash() -> dict:
        """SPEC §12: hash over the whole consensus state, for comparing nodes."""
        return {"height": chain.height, "best_hash": chain.tip.hash.hex(),
                "state_hash": compute_state_hash(store.state).hex()}

    def getmpescrow(mp_escrow_id: str) -> dict | None:
        """SPEC §12: MP escrow state of §15 (owner as bech32m), or null once claimed or
        refunded."""
        escrow = get_mp_escrow(store.state, parse_hash(mp_escrow_id, "mp_escrow_id"))
        return (None if escrow is None
                else {"mp_escrow_id": mp_escrow_id.lower(), **escrow.to_json()})

    def getchannel(channel_id: str) -> dict | None:
        """SPEC §12: channel state of §16 (payer, payee as bech32m), or null once closed,
        proven cheated or expired."""
        channel = get_channel(store.state, parse_hash(channel_id, "channel_id"))
        return (None if channel is None
                else {"channel_id": channel_id.lower(), **channel.to_json()})

    def stop() -> bool:
        """SPEC §12: answer true, then shut down cleanly."""
        node.request_stop()
        return True

    methods = {f.__name__: f for f in (
        getinfo, getblockhash, getblock, getaccount, getescrow, getdraw, getredeemed,
        sendrawtransaction, gettransaction, getrawmempool, getpeerinfo, addnode, generate,
        getstatehash, stop, getmpescrow, getchannel)}
    methods.update(PushMethods(node).table())  # waitfor*, listescrows, estimatefee
    methods.update(WatchMethods(node).table())  # ticket watch between merchants
    return methods
