"""Serve the explorer app with hypercorn's trio worker (the RPC server's HTTP stack)."""

from __future__ import annotations

import functools
import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

log = logging.getLogger("explorer")

GRACEFUL_SECONDS = 1.0
READ_TIMEOUT = 30  # seconds a client may stay silent mid-request


async def serve_http(app, host: str = "127.0.0.1", port: int = 0, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` (ASGI) on ``host:port`` until cancelled; ``task_status.started(port)``
    with the bound port (``port`` 0 picks a free one). Raises ``OSError`` if the port
    cannot be bound."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("explorer.http")
    config.graceful_timeout = GRACEFUL_SECONDS
    config.read_timeout = READ_TIMEOUT
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn_serve, app, config,
                                                      mode="asgi"))
        bound = int(binds[0].rsplit(":", 1)[1])
        log.info("explorer and /metrics on http://%s:%d/", host, bound)
        task_status.started(bound)
