"""The ``merchant serve`` options of one point of sale among several (``--point-of-sale``,
``--peer-pos``, ``--sync-interval``), turned into one ``pos`` keyword: a
``wallet.merchant.pos_gossip.PosConfig`` or None (a single point of sale, as before).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click

from wallet.merchant.pos_gossip import DEFAULT_SYNC_INTERVAL, PosConfig


def pos_dir(directory: Path, pos: PosConfig | None) -> Path:
    """Where point of sale ``pos`` of the merchant in ``directory`` keeps its stores and
    service.json: ``directory/pos-N``, or ``directory`` itself without ``--point-of-sale``."""
    return directory if pos is None else directory / f"pos-{pos.index}"


def pos_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the point-of-sale options to ``command``; they reach it as ``pos``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        index = kwargs.pop("point_of_sale")
        peers = tuple(kwargs.pop("peer_pos"))
        interval = kwargs.pop("sync_interval")
        if index is None and peers:
            raise click.UsageError("--peer-pos needs --point-of-sale N")
        try:
            kwargs["pos"] = None if index is None else PosConfig(index, peers, interval)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, **kwargs)

    options = [
        click.option("--point-of-sale", "point_of_sale", type=click.IntRange(0, 255),
                     default=None, metavar="N",
                     help="Run as point of sale N of this payee (several `merchant serve` "
                          "of one key, each with its own port); stores in "
                          "merchants/NAME/pos-N. Point 0 sends the CHANNEL_CLOSEs."),
        click.option("--peer-pos", "peer_pos", multiple=True, metavar="URL",
                     help="Another point of sale of this payee (repeatable; list all of "
                          "them): accepted vouchers are pushed to it as signed receipts."),
        click.option("--sync-interval", type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_SYNC_INTERVAL, show_default=True, metavar="SECONDS",
                     help="Longest time (T^ of SPEC §16) this point of sale accepts vouchers "
                          "without a push acknowledged by every peer; after it, vouchers "
                          "are refused (pos-unsynced)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
