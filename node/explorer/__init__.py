"""The node's block explorer and Prometheus endpoint (``microcash-node --http-port N``).

``ExplorerData`` (``node.explorer.data``) reads the node in-process through its JSON-RPC
method implementations; ``make_app`` (``node.explorer.app``) renders it as HTML pages with
Jinja2 templates and serves ``/metrics``; ``serve_http`` (``node.explorer.server``) runs
the app on hypercorn's trio worker inside the node's nursery. DESIGN "Operators' view".
"""

from node.explorer.app import make_app
from node.explorer.data import BadRequest, ExplorerData, NotFound
from node.explorer.server import serve_http

__all__ = ["ExplorerData", "BadRequest", "NotFound", "make_app", "serve_http"]
