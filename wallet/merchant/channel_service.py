"""The payee's voucher service: ``POST /v1/vouchers`` and ``GET /v1/channels`` (SPEC §16).

Request (``Content-Type: application/json``)::

    {"channel_id": "<64 hex>", "voucher": {"k": int, "cumulative": int, "sig": "<128 hex>"}}

Answer 200 ``{"accepted": true, "k", "cumulative", "duplicate": bool}`` once the voucher
is durably stored, or ``{"accepted": false, "reason": r}`` with ``r`` one of
``unknown-channel``, ``wrong-payee``, ``channel-closing`` (the closer already sent the
close), ``channel-expired``, ``bad-voucher-signature``, ``voucher-out-of-order``,
``voucher-underpaid``, ``bad-voucher``, ``equivocation``; 400 for a malformed request.

``GET /v1/channels/{channel_id}`` answers ``{"price", "k", "cumulative", "status"}``:
what a payer reads before it signs (a voucher the payee refuses is still signed, and
its ``k`` can never carry another cumulative, so the payer checks the price first).

Checks, in order: the channel from the node (``getchannel``) and its payee; then, under
one ``trio.Lock`` shared with the closer (so a close never races an acceptance), the
store's status;
a voucher with an already accepted ``k`` is a re-delivery when its cumulative is the same
(acknowledged again, ``duplicate``) and an equivocation when it differs (both vouchers are
kept and the closer proves it with CHANNEL_CHEAT); else ``verify_voucher_for_payee`` with
the last accepted ``(k, cumulative)``, the price and the close margin.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from consensus.channel import Voucher, verify_voucher_for_payee, verify_voucher_signature
from consensus.errors import ConsensusError
from wallet.merchant.chainview import ChainView, NodeError
from wallet.merchant.channel_store import OPEN, ChannelStore

log = logging.getLogger(__name__)

MAX_VOUCHER_BODY = 4096  # bytes; a voucher request is about 250
DEFAULT_CLOSE_MARGIN = 2  # blocks before the last closable height the closer acts
_U64 = 2**64


class VoucherRequestError(Exception):
    """A malformed voucher request (HTTP 400)."""


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
        raise VoucherRequestError(f"{what} must be an integer 0 <= x < 2^64")
    return value


def _hex(value: Any, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise VoucherRequestError(f"{what} must be {2 * size} hex digits")
    return raw


def parse_voucher_request(body: bytes) -> tuple[bytes, Voucher]:
    """``(channel_id, voucher)`` from a ``POST /v1/vouchers`` body (module docstring).
    Raises ``VoucherRequestError``."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise VoucherRequestError("body is not JSON (or nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("voucher"), dict):
        raise VoucherRequestError('expected {"channel_id": hex, "voucher": {k, cumulative, sig}}')
    v = doc["voucher"]
    return (_hex(doc.get("channel_id"), 32, "channel_id"),
            Voucher(_uint(v.get("k"), "voucher.k"), _uint(v.get("cumulative"),
                                                          "voucher.cumulative"),
                    _hex(v.get("sig"), 64, "voucher.sig")))


class ChannelService:
    """Accepts vouchers for the payee ``payee_pubkey`` (SPEC §16); see the module docstring.

    ``price`` (units) is the least increase per voucher; ``close_margin`` (blocks) stops
    acceptance where the closer starts (``current_round + margin <= expiry_height - 1``).
    ``lock`` is shared with ``wallet.merchant.closer.Closer``.
    """

    def __init__(self, payee_pubkey: bytes, store: ChannelStore, view: ChainView, *,
                 price: int = 0, close_margin: int = DEFAULT_CLOSE_MARGIN) -> None:
        if price < 0 or close_margin < 0:
            raise ValueError("price and close_margin must be >= 0")
        self.payee_pubkey = payee_pubkey
        self.store = store
        self._view = view
        self.price = price
        self.close_margin = close_margin
        self.lock = trio.Lock()
        self.proofs = 0  # equivocations kept by this process: the closer acts on a new one

    async def submit(self, channel_id: bytes, voucher: Voucher) -> dict[str, Any]:
        """Check and durably store one voucher; the answer (module docstring).
        Raises ``NodeError`` when the node cannot supply the channel."""
        channel = await self._view.channel(channel_id)  # node reads outside the lock:
        t = await self._view.height(fresh=True)  # only the store check-and-write is serial
        if channel is None:
            return _refused("unknown-channel")
        if channel.payee != self.payee_pubkey:
            return _refused("wrong-payee")
        async with self.lock:
            stored = self.store.get(channel_id)
            closing = stored is not None and stored.status != OPEN
            if closing and not 1 <= voucher.k <= stored.k:
                return _refused("channel-closing")  # an earlier k may still prove cheating
            last_k, last_cum = (0, 0) if stored is None else (stored.k, stored.cumulative)
            genesis = self._view.genesis_hash
            if 1 <= voucher.k <= last_k:
                if not verify_voucher_signature(channel.payer, genesis, channel_id, voucher):
                    return _refused("bad-voucher-signature")
                earlier = self.store.voucher_at(channel_id, voucher.k)
                if earlier is not None and earlier.cumulative == voucher.cumulative:
                    return {"accepted": True, "k": voucher.k, "cumulative": voucher.cumulative,
                            "duplicate": True}
                if earlier is not None:
                    if await trio.to_thread.run_sync(self.store.add_proof, channel_id,
                                                     earlier, voucher):
                        self.proofs += 1
                        log.warning("channel %s: payer signed voucher %d for %d and %d "
                                    "units: equivocation kept, CHANNEL_CHEAT follows",
                                    channel_id.hex(), voucher.k, earlier.cumulative,
                                    voucher.cumulative)
                    return _refused("equivocation")
            if closing:
                return _refused("channel-closing")
            try:
                verify_voucher_for_payee(genesis, channel_id, channel, voucher, last_k, last_cum,
                                         self.price, t + 1, self.close_margin)
            except ConsensusError as exc:
                return _refused(exc.reason)
            await trio.to_thread.run_sync(self.store.accept, channel_id, channel, voucher)
        log.info("channel %s: voucher %d accepted, %d of %d units", channel_id.hex(),
                 voucher.k, voucher.cumulative, channel.deposit)
        return {"accepted": True, "k": voucher.k, "cumulative": voucher.cumulative,
                "duplicate": False}

    def status(self) -> dict[str, Any]:
        """``{"channels": [StoredChannel.to_json(), ...]}``."""
        return {"channels": self.store.summaries()}

    # ---- HTTP --------------------------------------------------------------------------

    async def _post_voucher(self, request: Request) -> JSONResponse:
        media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
        if media != "application/json":
            return JSONResponse({"error": "Content-Type must be application/json"},
                                status_code=415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_VOUCHER_BODY:
                return JSONResponse({"error": f"body over {MAX_VOUCHER_BODY} bytes"},
                                    status_code=413)
        try:
            channel_id, voucher = parse_voucher_request(body)
            return JSONResponse(await self.submit(channel_id, voucher))
        except VoucherRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except NodeError as exc:
            log.warning("cannot check a voucher, node unavailable: %s", exc)
            return JSONResponse({"error": f"node unavailable: {exc}"}, status_code=503)

    async def _get_channels(self, request: Request) -> JSONResponse:
        return JSONResponse(self.status())

    def channel_info(self, channel_id: bytes) -> dict[str, Any]:
        """What a payer asks before signing: ``{"price", "k", "cumulative", "status"}``
        (``k = 0`` and status ``new`` before the first voucher)."""
        stored = self.store.get(channel_id)
        if stored is None:
            return {"price": self.price, "k": 0, "cumulative": 0, "status": "new"}
        return {"price": self.price, "k": stored.k, "cumulative": stored.cumulative,
                "status": stored.status}

    async def _get_channel(self, request: Request) -> JSONResponse:
        try:
            channel_id = _hex(request.path_params["channel_id"], 32, "channel_id")
        except VoucherRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.channel_info(channel_id))

    def routes(self) -> list[Route]:
        """``POST /v1/vouchers``, ``GET /v1/channels`` and ``GET /v1/channels/{id}``, for
        the merchant's app."""
        return [Route("/v1/vouchers", self._post_voucher, methods=["POST"]),
                Route("/v1/channels", self._get_channels, methods=["GET"]),
                Route("/v1/channels/{channel_id}", self._get_channel, methods=["GET"])]


def _refused(reason: str) -> dict[str, Any]:
    return {"accepted": False, "reason": reason}
