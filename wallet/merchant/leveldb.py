"""What the merchant's LevelDB stores share: opening with a clear error, one lock, close.

``TicketStore`` (SPEC §4.1 tickets), ``ChannelStore`` (§16 vouchers) and ``MpStore``
(§15 commitments and tickets) each keep msgpack records in their own LevelDB directory.
LevelDB's own lock keeps a second process out; ``_lock`` serialises this process's
read-modify-writes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import msgpack
import plyvel


def pack(obj: object) -> bytes:
    """A store value: msgpack with bin for bytes."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Inverse of ``pack``."""
    return msgpack.unpackb(data, raw=False)


class LevelDBStore:
    """A LevelDB directory at ``path`` (created if missing) with a thread lock.

    Subclasses name themselves in ``WHAT`` ("ticket store") and the exception opening
    raises in ``ERROR`` (when the directory is in use by another process or is not a
    store). Use as a context manager or call ``close``.
    """

    WHAT: ClassVar[str] = "store"
    ERROR: ClassVar[type[Exception]] = OSError

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = plyvel.DB(str(path), create_if_missing=True)
        except plyvel.Error as exc:
            raise self.ERROR(f"cannot open {self.WHAT} {path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database (idempotent); later reads and writes raise ``RuntimeError``."""
        with self._lock:
            if not self._db.closed:
                self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
