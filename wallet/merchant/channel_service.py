"""The payee's voucher service: ``POST /v1/vouchers`` and ``GET /v1/channels`` (SPEC §16).

Request (``Content-Type: application/json``)::

    {"channel_id": "<64 hex>", "voucher": {"k": int, "cumulative": int, "sig": "<128 hex>"}}

Answer 200 ``{"accepted": true, "k", "cumulative", "duplicate": bool}`` once the voucher
is durably stored, or ``{"accepted": false, "reason": r}`` with ``r`` one of
``unknown-channel``, ``wrong-payee``, ``channel-closing`` (the closer already sent the
close), ``channel-expired``, ``bad-voucher-signature``, ``voucher-out-of-order``,
``voucher-underpaid``, ``bad-voucher``, ``equivocation``, ``bad-receipt``,
``bad-receipt-signature``, ``pos-unsynced`` (with ``detail``); 400 for a malformed request.
With the payee's seed an accepted answer also carries ``"receipt"``.

``GET /v1/channels/{channel_id}`` answers ``{"price", "k", "cumulative", "status", "pos",
"points_of_sale", "sync_interval"}``:
what a payer reads before it signs (a voucher the payee refuses is still signed, and
its ``k`` can never carry another cumulative, so the payer checks the price first).

Checks, in order: the channel from the node (``getchannel``) and its payee; then, under
one ``trio.Lock`` shared with the closer (so a close never races an acceptance), the
store's status;
a voucher with an already accepted ``k`` is a re-delivery when its cumulative is the same
(acknowledged again, ``duplicate``) and an equivocation when it differs (both vouchers are
kept and the closer proves it with CHANNEL_CHEAT); else ``verify_voucher_for_payee`` with
the last accepted ``(k, cumulative)``, the price and the close margin.

Several points of sale (``wallet.merchant.pos_gossip``, docs/DESIGN.md "Several points of
sale of one payee"): a request may carry ``"receipt"`` (``wallet.receipts``, the
payer's latest, from any point of sale of this payee); it is verified and its voucher
taken in (``ChannelStore.learn``) before the voucher is checked, so a point of sale that
has not heard of the payments made elsewhere knows the cumulative so far. A receipt that
contradicts a voucher held here is an equivocation like any other. An accepted voucher
(or a re-delivered one) is answered with this point of sale's receipt, and queued for the
peers in the same synced write. ``POST /v1/receipts`` takes the peers' pushes. A point of
sale out of sync with its peers refuses with ``pos-unsynced``; one whose payer shows a
bad receipt with ``bad-receipt`` (wrong channel) or ``bad-receipt-signature``.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from consensus.channel import (ChannelState, Voucher, verify_voucher_for_payee,
                               verify_voucher_signature)
from consensus.errors import ConsensusError
from wallet.merchant.chainview import ChainView, NodeError
from wallet.merchant.channel_store import EQUIVOCATION, NEW, OPEN, ChannelStore
from wallet.merchant.pos_gossip import (MAX_PUSH_BODY, UNSYNCED, PosConfig, PosGossip,
                                        parse_receipts_request)
from wallet.receipts import Receipt, ReceiptError, parse_hex, sign_receipt, verify_receipt

log = logging.getLogger(__name__)

MAX_VOUCHER_BODY = 4096  # bytes; a voucher request is about 250
DEFAULT_CLOSE_MARGIN = 2  # blocks before the last closable height the closer acts
_U64 = 2**64


class VoucherRequestError(Exception):
    """A malformed voucher request (HTTP 400)."""


async def _json_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The body of a JSON POST, or the error answer: 415 unless ``Content-Type`` is
    ``application/json`` (parameters and case ignored), 413 past ``limit`` bytes (read
    no further)."""
    media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if media != "application/json":
        return JSONResponse({"error": "Content-Type must be application/json"}, status_code=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return JSONResponse({"error": f"body over {limit} bytes"}, status_code=413)
    return body


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
        raise VoucherRequestError(f"{what} must be an integer 0 <= x < 2^64")
    return value


def _hex(value: Any, size: int, what: str) -> bytes:
    return parse_hex(value, size, what, VoucherRequestError)


def parse_voucher_request(body: bytes) -> tuple[bytes, Voucher, Receipt | None]:
    """``(channel_id, voucher, receipt or None)`` from a ``POST /v1/vouchers`` body (module
    docstring). Raises ``VoucherRequestError``."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise VoucherRequestError("body is not JSON (or nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("voucher"), dict):
        raise VoucherRequestError('expected {"channel_id": hex, "voucher": {k, cumulative, sig}}')
    v = doc["voucher"]
    receipt = None
    if doc.get("receipt") is not None:
        try:
            receipt = Receipt.from_json(doc["receipt"])
        except ReceiptError as exc:
            raise VoucherRequestError(str(exc)) from None
    return (_hex(doc.get("channel_id"), 32, "channel_id"),
            Voucher(_uint(v.get("k"), "voucher.k"), _uint(v.get("cumulative"),
                                                          "voucher.cumulative"),
                    _hex(v.get("sig"), 64, "voucher.sig")), receipt)


class ChannelService:
    """Accepts vouchers for the payee ``payee_pubkey`` (SPEC §16); see the module docstring.

    ``price`` (units) is the least increase per voucher; ``close_margin`` (blocks) stops
    acceptance where the closer starts (``current_round + margin <= expiry_height - 1``).
    ``lock`` is shared with ``wallet.merchant.closer.Closer``. With ``payee_seed`` every
    accepted voucher is answered with a receipt signed as point of sale ``pos.index``;
    ``pos`` with peers needs ``payee_seed`` and runs a ``PosGossip`` (``self.gossip``).
    """

    def __init__(self, payee_pubkey: bytes, store: ChannelStore, view: ChainView, *,
                 price: int = 0, close_margin: int = DEFAULT_CLOSE_MARGIN,
                 payee_seed: bytes | None = None, pos: PosConfig | None = None) -> None:
        if price < 0 or close_margin < 0:
            raise ValueError("price and close_margin must be >= 0")
        self.payee_pubkey = payee_pubkey
        self.store = store
        self._view = view
        self.price = price
        self.close_margin = close_margin
        self.lock = trio.Lock()
        self.proofs = 0  # equivocations kept by this process: the closer acts on a new one
        self._seed = payee_seed
        self.pos = pos or PosConfig()
        if self.pos.peers and payee_seed is None:
            raise ValueError("points of sale with peers sign receipts: payee_seed needed")
        self.gossip = PosGossip(self.pos, store) if self.pos.peers else None
        # a point that does not close stops one block before point 0 closes, so that its
        # last vouchers have reached point 0 when the close is built
        self.accept_margin = close_margin + (1 if self.gossip and not self.pos.closes else 0)

    def _receipt(self, channel_id: bytes, voucher: Voucher) -> Receipt | None:
        if self._seed is None:
            return None
        return sign_receipt(self._seed, self._view.genesis_hash, channel_id, voucher,
                            self.pos.index)

    def _answer(self, channel_id: bytes, voucher: Voucher, duplicate: bool,
                receipt: Receipt | None = None) -> dict[str, Any]:
        receipt = receipt or self._receipt(channel_id, voucher)
        answer = {"accepted": True, "k": voucher.k, "cumulative": voucher.cumulative,
                  "duplicate": duplicate}
        if receipt is not None:
            answer["receipt"] = receipt.to_json()
        return answer

    async def _learn(self, channel_id: bytes, channel: ChannelState, receipt: Receipt) -> str:
        """Take in a verified receipt's voucher (under ``lock``); what the store found."""
        found = await trio.to_thread.run_sync(self.store.learn, channel_id, channel,
                                              receipt.voucher)
        if found == EQUIVOCATION:
            self.proofs += 1
            log.warning("channel %s: voucher %d of a receipt of point of sale %d contradicts "
                        "one held here: equivocation kept, CHANNEL_CHEAT follows",
                        channel_id.hex(), receipt.k, receipt.pos_index)
        elif found == NEW:
            log.info("channel %s: voucher %d (%d units) learned from point of sale %d",
                     channel_id.hex(), receipt.k, receipt.cumulative, receipt.pos_index)
        return found

    async def submit(self, channel_id: bytes, voucher: Voucher,
                     receipt: Receipt | None = None) -> dict[str, Any]:
        """Check and durably store one voucher, after taking in the payer's ``receipt``
        (if any); the answer (module docstring). Raises ``NodeError`` when the node
        cannot supply the channel."""
        channel = await self._view.channel(channel_id)  # node reads outside the lock:
        t = await self._view.height(fresh=True)  # only the store check-and-write is serial
        if channel is None:
            return _refused("unknown-channel")
        if channel.payee != self.payee_pubkey:
            return _refused("wrong-payee")
        genesis = self._view.genesis_hash
        if receipt is not None:
            if receipt.channel_id != channel_id:
                return _refused("bad-receipt")
            reason = verify_receipt(self.payee_pubkey, channel.payer, genesis, receipt)
            if reason is not None:
                return _refused("bad-receipt-signature" if reason == "bad-receipt-signature"
                                else "bad-receipt")
        async with self.lock:
            if receipt is not None and await self._learn(channel_id, channel,
                                                         receipt) == EQUIVOCATION:
                return _refused("equivocation")
            stored = self.store.get(channel_id)
            closing = stored is not None and stored.status != OPEN
            if closing and not 1 <= voucher.k <= stored.k:
                return _refused("channel-closing")  # an earlier k may still prove cheating
            last_k, last_cum = (0, 0) if stored is None else (stored.k, stored.cumulative)
            if 1 <= voucher.k <= last_k:
                if not verify_voucher_signature(channel.payer, genesis, channel_id, voucher):
                    return _refused("bad-voucher-signature")
                earlier = self.store.voucher_at(channel_id, voucher.k)
                if earlier is not None and earlier.cumulative == voucher.cumulative:
                    return self._answer(channel_id, voucher, True)
                if earlier is not None:
                    if await trio.to_thread.run_sync(self.store.add_proof, channel_id,
                                                     earlier, voucher):
                        self.proofs += 1
                        log.warning("channel %s: payer signed voucher %d for %d and %d "
                                    "units: equivocation kept, CHANNEL_CHEAT follows",
                                    channel_id.hex(), voucher.k, earlier.cumulative,
                                    voucher.cumulative)
                        if self.gossip is not None:  # the peers may hold only the other
                            await trio.to_thread.run_sync(
                                self.store.enqueue, self._receipt(channel_id, voucher).encode(),
                                self.pos.peer_ids)
                            self.gossip.notify()
                    return _refused("equivocation")
            if closing:
                return _refused("channel-closing")
            try:
                verify_voucher_for_payee(genesis, channel_id, channel, voucher, last_k, last_cum,
                                         self.price, t + 1, self.accept_margin)
            except ConsensusError as exc:
                return _refused(exc.reason)
            unsynced = self.gossip.unsynced() if self.gossip is not None else None
            if unsynced is not None:
                log.warning("channel %s: voucher %d refused, point of sale out of sync: %s",
                            channel_id.hex(), voucher.k, unsynced)
                return {**_refused(UNSYNCED), "detail": unsynced}
            issued = self._receipt(channel_id, voucher)
            await trio.to_thread.run_sync(functools.partial(
                self.store.accept, channel_id, channel, voucher,
                receipt=b"" if issued is None else issued.encode(),
                peers=self.pos.peer_ids if self.gossip is not None else ()))
            if self.gossip is not None:
                self.gossip.notify()
        log.info("channel %s: voucher %d accepted, %d of %d units", channel_id.hex(),
                 voucher.k, voucher.cumulative, channel.deposit)
        return self._answer(channel_id, voucher, False, issued)

    async def take_receipts(self, receipts: list[Receipt | str]) -> dict[str, Any]:
        """Take in a peer's push (``wallet.merchant.pos_gossip``): each receipt verified
        (channel on chain and ours, receipt by the payee key, voucher by the payer) and
        learned. ``{"learned", "known", "equivocations", "rejected": [{"index",
        "reason"}]}`` after the synced writes. Raises ``NodeError``."""
        counts = {"learned": 0, "known": 0, "equivocations": 0}
        rejected: list[dict[str, Any]] = []
        channels: dict[bytes, ChannelState | None] = {}
        genesis = self._view.genesis_hash
        for index, receipt in enumerate(receipts):
            if isinstance(receipt, str):
                rejected.append({"index": index, "reason": receipt})
                continue
            cid = receipt.channel_id
            if cid not in channels:
                channels[cid] = await self._view.channel(cid)
            channel = channels[cid]
            reason = ("unknown-channel" if channel is None else "wrong-payee"
                      if channel.payee != self.payee_pubkey else
                      verify_receipt(self.payee_pubkey, channel.payer, genesis, receipt))
            if reason is not None:
                rejected.append({"index": index, "reason": reason})
                continue
            async with self.lock:
                found = await self._learn(cid, channel, receipt)
            counts[{NEW: "learned", EQUIVOCATION: "equivocations"}.get(found, "known")] += 1
        return {**counts, "rejected": rejected}

    def status(self) -> dict[str, Any]:
        """``{"channels": [StoredChannel.to_json(), ...]}`` (+ ``"points_of_sale"``, the
        gossip state, with peers)."""
        status: dict[str, Any] = {"channels": self.store.summaries()}
        if self.gossip is not None:
            status["points_of_sale"] = self.gossip.status()
        return status

    # ---- HTTP --------------------------------------------------------------------------

    async def _post_voucher(self, request: Request) -> JSONResponse:
        body = await _json_body(request, MAX_VOUCHER_BODY)
        if isinstance(body, JSONResponse):
            return body
        try:
            channel_id, voucher, receipt = parse_voucher_request(body)
            return JSONResponse(await self.submit(channel_id, voucher, receipt))
        except VoucherRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except NodeError as exc:
            log.warning("cannot check a voucher, node unavailable: %s", exc)
            return JSONResponse({"error": f"node unavailable: {exc}"}, status_code=503)

    async def _get_channels(self, request: Request) -> JSONResponse:
        return JSONResponse(self.status())

    async def _post_receipts(self, request: Request) -> JSONResponse:
        body = await _json_body(request, MAX_PUSH_BODY)
        if isinstance(body, JSONResponse):
            return body
        try:
            return JSONResponse(await self.take_receipts(parse_receipts_request(body)))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except NodeError as exc:
            log.warning("cannot check pushed receipts, node unavailable: %s", exc)
            return JSONResponse({"error": f"node unavailable: {exc}"}, status_code=503)

    def channel_info(self, channel_id: bytes) -> dict[str, Any]:
        """What a payer asks before signing: ``{"price", "k", "cumulative", "status", "pos",
        "points_of_sale", "sync_interval"}`` (``k = 0`` and status ``new`` before the first
        voucher), plus ``"unsynced"`` (why) while this point refuses ``pos-unsynced``."""
        stored = self.store.get(channel_id)
        unsynced = self.gossip.unsynced() if self.gossip is not None else None
        pos = {"pos": self.pos.index, "points_of_sale": 1 + len(self.pos.peers),
               "sync_interval": self.pos.sync_interval if self.pos.peers else None}
        if unsynced is not None:
            pos["unsynced"] = unsynced  # the payer signs nothing for this point now
        if stored is None:
            return {"price": self.price, "k": 0, "cumulative": 0, "status": "new", **pos}
        return {"price": self.price, "k": stored.k, "cumulative": stored.cumulative,
                "status": stored.status, **pos}

    async def _get_channel(self, request: Request) -> JSONResponse:
        try:
            channel_id = _hex(request.path_params["channel_id"], 32, "channel_id")
        except VoucherRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.channel_info(channel_id))

    def routes(self) -> list[Route]:
        """``POST /v1/vouchers``, ``POST /v1/receipts`` (peer points of sale),
        ``GET /v1/channels`` and ``GET /v1/channels/{id}``, for the merchant's app."""
        return [Route("/v1/vouchers", self._post_voucher, methods=["POST"]),
                Route("/v1/receipts", self._post_receipts, methods=["POST"]),
                Route("/v1/channels", self._get_channels, methods=["GET"]),
                Route("/v1/channels/{channel_id}", self._get_channel, methods=["GET"])]


def _refused(reason: str) -> dict[str, Any]:
    return {"accepted": False, "reason": reason}
