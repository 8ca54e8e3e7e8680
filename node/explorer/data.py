"""What the explorer pages show, read in-process from a running node.

Chain state comes through the node's own JSON-RPC method implementations
(``node.rpc_methods``: ``getinfo``, ``getblock``, ``getescrow``, ``getdraw``,
``getredeemed``, ``getaccount``, ``listescrows``, ``getmpescrow``, ``getchannel``,
``gettransaction``, ``getpeerinfo``), called directly, never over HTTP — so a page says
exactly what the RPC says. Transactions of a block are decoded from the stored block
(``chain.get_block``), since no RPC returns them.

Every function returns plain dicts and lists for the templates. Bad input raises
``BadRequest`` (the page answers 400), an unknown object ``NotFound`` (404).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from consensus.address import decode_address, encode_address
from consensus.channel import compute_channel_id
from consensus.errors import ConsensusError
from consensus.escrow import (EscrowState, compute_escrow_id, compute_t_draw,
                              compute_t_expire)
from consensus.micropay import compute_mp_escrow_id
from consensus.params import COIN
from consensus.ticket import Ticket
from consensus.tx import (CHANNEL_CHEAT, CHANNEL_CLOSE, CHANNEL_OPEN, CHEAT_PROOF, COINBASE,
                          ESCROW_CREATE, KIND_NAMES, MP_CLAIM, MP_ESCROW, REDEEM, TRANSFER, Tx,
                          ZERO_SENDER)
from node.jsonrpc import RpcError

if TYPE_CHECKING:
    from node.node import Node

RECENT_BLOCKS = 20        # blocks on the front page
ACTIVITY_BLOCKS = 500     # blocks scanned for recent proofs of cheating, escrows, channels
SUMMARY_CACHE = 4096      # per-block summaries kept (keyed by hash: a reorg never stales them)
MAX_GROUPS_SHOWN = 200    # draws listed on an escrow page


class BadRequest(Exception):
    """The request names no valid object (malformed hash, address or height)."""


class NotFound(Exception):
    """The object is well-formed but unknown to this node (or gone, e.g. refunded)."""


def mcash(units: int) -> str:
    """``units`` as MCASH with 8 decimals, trailing zeros dropped (SPEC §0: 10^8 units)."""
    whole, frac = divmod(int(units), COIN)
    text = f"{whole:,}".replace(",", " ")
    return f"{text}.{frac:08d}".rstrip("0").rstrip(".") if frac else text


def short(hex_text: str, n: int = 16) -> str:
    """The first ``n`` hex digits and an ellipsis."""
    return hex_text if len(hex_text) <= n else hex_text[:n] + "…"


def _address(raw: bytes) -> str:
    return encode_address(raw)


def _hex_id(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BadRequest(f"{what} must be 64 hex digits")
    return raw


class ExplorerData:
    """The explorer's read side over one node (its ``rpc_methods`` table, chain, params).

    ``methods`` defaults to ``node.rpc_methods``; pass another table only in tests.
    Not thread-safe: call from the node's trio thread (as the RPC server does).
    """

    def __init__(self, node: "Node", methods: Mapping[str, Callable[..., Any]] | None = None
                 ) -> None:
        self.node = node
        self.params = node.params
        self.rpc = methods if methods is not None else node.rpc_methods
        self._summaries: OrderedDict[bytes, dict] = OrderedDict()

    def _call(self, name: str, *args):
        """One RPC method; its argument errors become ``BadRequest``."""
        try:
            return self.rpc[name](*args)
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from None
        except ConsensusError as exc:
            raise NotFound(exc.reason) from None

    # -- front page ---------------------------------------------------------------------
    def overview(self) -> dict:
        """Tip, totals, peers, recent blocks and recent activity for the front page."""
        info = self._call("getinfo")
        tip = info["height"]
        recent = [self.block_summary(h) for h in range(tip, max(-1, tip - RECENT_BLOCKS), -1)]
        activity = self.activity(ACTIVITY_BLOCKS)
        return {"info": info, "tip": tip, "blocks": recent, "activity": activity,
                "peers": self._call("getpeerinfo"), "mempool": self._call("getrawmempool"),
                "chart": _chart(list(reversed(recent)))}

    def block_summary(self, height: int) -> dict:
        """Height, hash, time, size, tx count and what the block did (kinds, tickets
        redeemed, proofs of cheating, new escrows / MP escrows / channels)."""
        block_hash = bytes.fromhex(self._call("getblockhash", height))
        cached = self._summaries.get(block_hash)
        if cached is not None:
            self._summaries.move_to_end(block_hash)
            return cached
        block = self.node.chain.get_block(block_hash)
        kinds: Counter[str] = Counter()
        cheats, escrows, mp_escrows, channels = [], [], [], []
        tickets = 0
        for tx in block.txs:
            kinds[KIND_NAMES[tx.kind]] += 1
            txid = tx.txid()
            if tx.kind == REDEEM:
                tickets += len(tx.body)
            elif tx.kind == CHEAT_PROOF:
                ticket = Ticket.decode(tx.body[0])
                cheats.append({"kind": "CHEAT_PROOF", "txid": txid.hex(), "height": height,
                               "object": "escrow", "id": ticket.escrow_id.hex(),
                               "what": f"seqno {ticket.seqno}"
                                       + (" issued twice" if tx.body[1] is not None
                                          else " out of range")})
            elif tx.kind == CHANNEL_CHEAT:
                cheats.append({"kind": "CHANNEL_CHEAT", "txid": txid.hex(), "height": height,
                               "object": "channel", "id": tx.body.channel_id.hex(),
                               "what": f"two vouchers k={tx.body.voucher_a.k}"})
            elif tx.kind == ESCROW_CREATE:
                escrows.append(compute_escrow_id(block_hash, txid).hex())
            elif tx.kind == MP_ESCROW:
                mp_escrows.append(compute_mp_escrow_id(txid).hex())
            elif tx.kind == CHANNEL_OPEN:
                channels.append(compute_channel_id(txid).hex())
        h = block.header
        summary = {"height": height, "hash": block_hash.hex(), "timestamp": h.timestamp,
                   "size": len(block.encode()), "ntx": len(block.txs), "kinds": dict(kinds),
                   "tickets": tickets, "cheats": cheats, "escrows": escrows,
                   "mp_escrows": mp_escrows, "channels": channels}
        self._summaries[block_hash] = summary
        while len(self._summaries) > SUMMARY_CACHE:
            self._summaries.popitem(last=False)
        return summary

    def activity(self, depth: int) -> dict:
        """Proofs of cheating, escrows, MP escrows and channels created in the last
        ``depth`` main-chain blocks (newest first), with the burned total."""
        tip = self.node.chain.height
        out = {"depth": min(depth, tip + 1), "cheats": [], "escrows": [], "mp_escrows": [],
               "channels": [], "tickets": 0}
        for height in range(tip, max(-1, tip - depth), -1):
            s = self.block_summary(height)
            out["cheats"] += s["cheats"]
            out["tickets"] += s["tickets"]
            for key in ("escrows", "mp_escrows", "channels"):
                out[key] += [{"id": i, "height": height} for i in s[key]]
        return out

    # -- blocks and transactions --------------------------------------------------------
    def block(self, ident: str) -> dict:
        """A block by height or hash: the ``getblock`` fields plus every transaction."""
        key: int | str = int(ident) if ident.isdigit() and len(ident) < 64 else ident
        if isinstance(key, str):
            _hex_id(key, "block hash")
        elif key > self.node.chain.height:
            raise NotFound(f"no block at height {key} yet (tip {self.node.chain.height})")
        try:
            info = self._call("getblock", key)
        except RpcError as exc:
            raise (BadRequest if exc.code == -8 else NotFound)(exc.message) from None
        block_hash = bytes.fromhex(info["hash"])
        block = self.node.chain.get_block(block_hash)
        txs = [self._tx_view(tx, block_hash) for tx in block.txs]
        return {"info": info, "txs": txs, "tip": self.node.chain.height}

    def transaction(self, txid_hex: str) -> dict:
        """A transaction by id: where it is (``gettransaction``) and what it does."""
        txid = _hex_id(txid_hex, "txid")
        status = self._call("gettransaction", txid.hex())
        if status is None:
            raise NotFound("transaction not found (neither pooled nor confirmed)")
        if status["status"] == "mempool":
            tx = self.node.mempool.get(txid)
            if tx is None:
                raise NotFound("transaction left the mempool")
            return {"status": status, "tx": self._tx_view(tx, None)}
        block_hash = bytes.fromhex(status["block_hash"])
        block = self.node.chain.get_block(block_hash)
        for tx in block.txs:
            if tx.txid() == txid:
                return {"status": status, "tx": self._tx_view(tx, block_hash)}
        raise NotFound("transaction not in its block")  # pragma: no cover - index/store skew

    def _tx_view(self, tx: Tx, block_hash: bytes | None) -> dict:
        """One transaction for display: kind, sender, fee and kind-specific fields; each
        detail is ``(label, text, link or None)``."""
        txid = tx.txid()
        details: list[tuple[str, str, str | None]] = []
        b = tx.body
        if tx.kind == COINBASE:
            for address, amount in b:
                details.append(("pays", f"{mcash(amount)} MCASH to {_address(address)}",
                                f"/account/{_address(address)}"))
        elif tx.kind == TRANSFER:
            to, amount = b
            details.append(("to", _address(to), f"/account/{_address(to)}"))
            details.append(("amount", f"{mcash(amount)} MCASH", None))
        elif tx.kind == ESCROW_CREATE:
            amount, penalty, win_num, win_den, beta, tkt_rate, draw_len, merchants = b
            if block_hash is not None:
                eid = compute_escrow_id(block_hash, txid).hex()
                details.append(("escrow", eid, f"/escrow/{eid}"))
            details += [("escrow amount", f"{mcash(amount)} MCASH", None),
                        ("penalty", f"{mcash(penalty)} MCASH", None),
                        ("p · β · tkt_rate · draw_len",
                         f"{win_num}/{win_den} · {beta} units · {tkt_rate} · {draw_len}", None)]
            details += [(f"merchant {i}", _address(m), f"/account/{_address(m)}")
                        for i, m in enumerate(merchants)]
        elif tx.kind == REDEEM:
            per_escrow: dict[str, list[int]] = {}
            for raw in b:
                ticket = Ticket.decode(raw)
                per_escrow.setdefault(ticket.escrow_id.hex(), []).append(ticket.seqno)
            for eid, seqnos in per_escrow.items():
                details.append((f"{len(seqnos)} tickets of", eid, f"/escrow/{eid}"))
                details.append(("seqnos", ", ".join(map(str, sorted(seqnos)[:64]))
                                + (" …" if len(seqnos) > 64 else ""), None))
        elif tx.kind == CHEAT_PROOF:
            ticket_a = Ticket.decode(b[0])
            eid = ticket_a.escrow_id.hex()
            details.append(("escrow broken", eid, f"/escrow/{eid}"))
            if b[1] is None:
                details.append(("proof", f"seqno {ticket_a.seqno} beyond N (out of range)", None))
            else:
                ticket_b = Ticket.decode(b[1])
                details.append(("proof", f"seqno {ticket_a.seqno} given to merchants "
                                         f"{ticket_a.merchant_index} and "
                                         f"{ticket_b.merchant_index}", None))
        elif tx.kind == MP_ESCROW:
            mid = compute_mp_escrow_id(txid).hex()
            details += [("MP escrow", mid, f"/mpescrow/{mid}"),
                        ("amount", f"{mcash(b.amount)} MCASH", None),
                        ("p", f"2^-{b.win_bits}", None),
                        ("refund height", str(b.refund_height), None)]
        elif tx.kind == MP_CLAIM:
            mid = b.mp_escrow_id.hex()
            details.append(("claims MP escrow", mid, f"/mpescrow/{mid}"))
        elif tx.kind == CHANNEL_OPEN:
            cid = compute_channel_id(txid).hex()
            details += [("channel", cid, f"/channel/{cid}"),
                        ("payee", _address(b.payee), f"/account/{_address(b.payee)}"),
                        ("deposit", f"{mcash(b.deposit)} MCASH", None),
                        ("penalty", f"{mcash(b.penalty)} MCASH", None),
                        ("expiry height", str(b.expiry_height), None)]
        elif tx.kind == CHANNEL_CLOSE:
            cid = b.channel_id.hex()
            details += [("closes channel", cid, f"/channel/{cid}"),
                        ("voucher", f"k={b.voucher.k}, {mcash(b.voucher.cumulative)} MCASH",
                         None)]
        elif tx.kind == CHANNEL_CHEAT:
            cid = b.channel_id.hex()
            details += [("channel cheated", cid, f"/channel/{cid}"),
                        ("proof", f"two vouchers with k={b.voucher_a.k}", None)]
        sender = None if tx.sender == ZERO_SENDER else _address(tx.sender)
        return {"txid": txid.hex(), "kind": KIND_NAMES[tx.kind], "sender": sender,
                "nonce": tx.nonce, "fee": tx.fee, "size": len(tx.encode()), "details": details}

    # -- escrows --------------------------------------------------------------------------
    def escrow(self, escrow_id_hex: str) -> dict:
        """An escrow (SPEC §3.2) with its schedule, draws and winners, and redeems."""
        eid = _hex_id(escrow_id_hex, "escrow id").hex()
        found = self._call("getescrow", eid)
        if found is None:
            raise NotFound("no live escrow with this id (unknown, or refunded and removed "
                           "at t_refund, SPEC §9)")
        escrow = EscrowState.from_rpc(found)
        tip = self.node.chain.height
        redeemed = self._call("getredeemed", eid)
        paid = {}
        for seqno, merchant_index, height in redeemed:
            paid.setdefault(seqno, []).append(merchant_index)
        groups = []
        for g in range(min(escrow.groups, MAX_GROUPS_SHOWN)):
            t_draw = compute_t_draw(self.params, escrow, g)
            first_round = escrow.start + g * escrow.draw_len
            row = {"group": g, "seqnos": (g * escrow.draw_size, (g + 1) * escrow.draw_size - 1),
                   "rounds": (first_round, first_round + escrow.draw_len - 1),
                   "t_draw": t_draw, "t_expire": compute_t_expire(self.params, escrow, g),
                   "winners": None, "vdf": None}
            if tip >= t_draw + 1:
                try:
                    draw = self._call("getdraw", eid, g)
                    row["vdf"] = draw["vdf"]
                    row["winners"] = [{"seqno": s, "paid_to": paid.get(s, [])}
                                      for s in sorted(draw["winners"])]
                except RpcError:
                    pass
            groups.append(row)
        merchants = [encode_address(m) for m in escrow.merchants]
        return {"id": eid, "escrow": found, "state": escrow, "tip": tip, "groups": groups,
                "groups_hidden": max(0, escrow.groups - MAX_GROUPS_SHOWN),
                "owner": encode_address(escrow.owner), "merchants": merchants,
                "redeemed": [{"seqno": s, "merchant_index": m, "height": h,
                              "merchant": merchants[m] if m < len(merchants) else "?"}
                             for s, m, h in redeemed],
                "paid_units": len(redeemed) * escrow.beta,
                "p": f"{escrow.win_num}/{escrow.win_den}"}

    def mp_escrow(self, mp_escrow_id_hex: str) -> dict:
        """A MICROPAY escrow (SPEC §15) by id."""
        mid = _hex_id(mp_escrow_id_hex, "MP escrow id").hex()
        found = self._call("getmpescrow", mid)
        if found is None:
            raise NotFound("no open MP escrow with this id (unknown, claimed or refunded)")
        return {"id": mid, "mp": found, "tip": self.node.chain.height}

    def channel(self, channel_id_hex: str) -> dict:
        """A payment channel (SPEC §16) by id."""
        cid = _hex_id(channel_id_hex, "channel id").hex()
        found = self._call("getchannel", cid)
        if found is None:
            raise NotFound("no open channel with this id (unknown, closed, proven cheated "
                           "or expired)")
        return {"id": cid, "channel": found, "tip": self.node.chain.height}

    # -- accounts -------------------------------------------------------------------------
    def account(self, address: str) -> dict:
        """An account (bech32m or hex) with the live escrows it owns or serves."""
        try:
            decode_address(address)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        acct = self._call("getaccount", address)
        owned = self._call("listescrows", "owner", address)
        serving = self._call("listescrows", "merchant", address)
        return {"account": acct, "owned": owned, "serving": serving}

    # -- search -------------------------------------------------------------------------
    def resolve(self, query: str) -> str:
        """The page a search box entry leads to: a height, a block hash, txid, escrow,
        MP escrow or channel id, or an address. ``NotFound`` if nothing matches."""
        q = query.strip()
        if q.isdigit() and len(q) < 64:  # a 64-digit string is a hash
            if int(q) > self.node.chain.height:
                raise NotFound(f"no block at height {q} yet (tip {self.node.chain.height})")
            return f"/block/{int(q)}"
        raw = None
        try:
            raw = bytes.fromhex(q)
        except ValueError:
            pass
        if raw is not None and len(raw) == 32:
            h = raw.hex()
            if self.node.store.get_block(raw) is not None:
                return f"/block/{h}"
            if self._call("gettransaction", h) is not None:
                return f"/tx/{h}"
            if self._call("getescrow", h) is not None:
                return f"/escrow/{h}"
            if self._call("getmpescrow", h) is not None:
                return f"/mpescrow/{h}"
            if self._call("getchannel", h) is not None:
                return f"/channel/{h}"
        try:
            decode_address(q)
        except ValueError:
            raise NotFound(f"nothing matches {q!r}: expected a height, a 64-hex-digit "
                           "hash or id, or an address") from None
        return f"/account/{q}"


def _chart(blocks: list[dict]) -> dict:
    """An inline SVG bar chart of recent blocks (bar height = transactions; no JS).

    Returns ``{width, height, bars: [{x, y, w, h, label, height}]}`` in SVG units.
    """
    width, height, pad = 600, 120, 4
    if not blocks:
        return {"width": width, "height": height, "bars": [], "max": 0}
    peak = max(b["ntx"] for b in blocks) or 1
    slot = width / len(blocks)
    bars = []
    for i, b in enumerate(blocks):
        h = max(2.0, (height - 2 * pad) * b["ntx"] / peak)
        bars.append({"x": round(i * slot + 1, 1), "y": round(height - pad - h, 1),
                     "w": round(max(1.0, slot - 2), 1), "h": round(h, 1),
                     "label": f"block {b['height']}: {b['ntx']} txs, {b['size']} bytes",
                     "height": b["height"]})
    return {"width": width, "height": height, "bars": bars, "max": peak}
