"""The explorer's Starlette app: HTML pages over ``ExplorerData`` plus ``GET /metrics``.

Routes (all ``GET``; ids are 64 hex digits, addresses bech32m or hex):

| path | page |
|---|---|
| ``/`` | tip, totals (supply, burned), peers, recent blocks with a chart, recent proofs of cheating, escrows, MP escrows, channels |
| ``/block/{height or hash}`` | header fields and every transaction |
| ``/tx/{txid}`` | one transaction, confirmed or pooled |
| ``/escrow/{id}`` | escrow state, schedule, each draw's winners, redeems |
| ``/mpescrow/{id}``, ``/channel/{id}`` | MICROPAY escrow (SPEC §15), channel (SPEC §16) |
| ``/account/{address}`` | balance, nonce, escrows owned and served |
| ``/search?q=`` | redirects to the page of a height, hash, id or address |
| ``/metrics`` | Prometheus text format (``node.metrics``) |
| ``/static/…`` | the stylesheet, served from the package |

Pages are rendered on the server with Jinja2 (autoescaped); the chart is inline SVG, so
the explorer needs no JavaScript. Malformed input answers 400, unknown objects 404,
each with a page saying why.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from node.explorer.data import BadRequest, ExplorerData, NotFound, mcash, short

if TYPE_CHECKING:
    from node.metrics import NodeMetrics

__all__ = ["make_app"]


def _when(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.PackageLoader("node.explorer", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined)
    env.filters.update(mcash=mcash, short=short, when=_when)
    return Jinja2Templates(env=env)


def make_app(data: ExplorerData, metrics: "NodeMetrics | None" = None) -> Starlette:
    """The explorer ASGI app over ``data``; with ``metrics`` also ``GET /metrics``."""
    templates = _templates()
    chain_name = data.params.name

    def page(request: Request, name: str, context: dict, status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, {"chain": chain_name, **context},
                                          status_code=status)

    def view(template: str, load: Callable[[Request], dict]):
        async def endpoint(request: Request) -> Response:
            try:
                context = load(request)
            except BadRequest as exc:
                return page(request, "error.html", {"status": 400, "message": str(exc)}, 400)
            except NotFound as exc:
                return page(request, "error.html", {"status": 404, "message": str(exc)}, 404)
            return page(request, template, context)
        return endpoint

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        try:
            if not query.strip():
                raise BadRequest("type a height, a block hash, a txid, an escrow, MP escrow "
                                 "or channel id, or an address")
            return RedirectResponse(data.resolve(query), status_code=303)
        except BadRequest as exc:
            return page(request, "error.html", {"status": 400, "message": str(exc)}, 400)
        except NotFound as exc:
            return page(request, "error.html", {"status": 404, "message": str(exc)}, 404)

    async def metrics_endpoint(request: Request) -> Response:
        from node.metrics import CONTENT_TYPE_LATEST
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    p = "path_params"
    routes = [
        Route("/", view("index.html", lambda r: data.overview())),
        Route("/block/{ident}", view("block.html", lambda r: data.block(getattr(r, p)["ident"]))),
        Route("/tx/{txid}", view("tx.html", lambda r: data.transaction(getattr(r, p)["txid"]))),
        Route("/escrow/{eid}", view("escrow.html", lambda r: data.escrow(getattr(r, p)["eid"]))),
        Route("/mpescrow/{mid}",
              view("mpescrow.html", lambda r: data.mp_escrow(getattr(r, p)["mid"]))),
        Route("/channel/{cid}",
              view("channel.html", lambda r: data.channel(getattr(r, p)["cid"]))),
        Route("/account/{address}",
              view("account.html", lambda r: data.account(getattr(r, p)["address"]))),
        Route("/search", search),
        Mount("/static", StaticFiles(packages=[("node.explorer", "static")]), name="static"),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics_endpoint))
    return Starlette(routes=routes)
