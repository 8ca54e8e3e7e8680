"""The wallet's locked, durable JSON documents and the dataclass records kept in them.

``wallet.json``, ``channels.json`` and ``micropay.json`` share one discipline: every
change is a read-modify-write under an exclusive ``flock`` on a sibling ``.lock`` file,
and the new document is written to a temporary file, fsynced and renamed into place
(``wallet.durable.replace_durably``). Two wallet commands running at once never lose
each other's changes, and a crash leaves either the old or the new file. Readers need no
lock: they see the old or the new version, never a mix.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

from wallet.durable import replace_durably

MAX_FILE_BYTES = 64 * 1024 * 1024  # far above any real wallet file; guards against junk


class WalletDBError(Exception):
    """A wallet file cannot be read or written; the message names the file and why."""


class JsonRecord:
    """Mixin for a dataclass kept as a JSON object in a wallet file.

    ``RECORD_NAME`` names the record in error messages (e.g. ``"channel record"``).
    """

    RECORD_NAME: ClassVar[str] = "record"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: Any):
        """Inverse of ``to_json``; unknown keys are ignored. Raises WalletDBError."""
        if not isinstance(data, dict):
            raise WalletDBError(f"{cls.RECORD_NAME} is not a JSON object")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise WalletDBError(f"{cls.RECORD_NAME} is incomplete: {exc}") from None


class LockedJsonFile:
    """``<wallet_dir>/<name>.json`` guarded by ``<wallet_dir>/<name>.lock``.

    ``empty`` is the document of a new file: a ``"version"`` plus every top-level field
    with a value of its type. A loaded document must have that version; missing fields
    are added from ``empty`` and fields of another type are refused. ``what`` names the
    file in messages ("a version 1 <what> file"). Every method raises WalletDBError.
    """

    def __init__(self, wallet_dir: Path | str, name: str, what: str,
                 empty: dict[str, Any]) -> None:
        self.wallet_dir = Path(wallet_dir)
        self.path = self.wallet_dir / f"{name}.json"
        self.lock_path = self.wallet_dir / f"{name}.lock"
        self.what = what
        self._empty = empty

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's exclusive lock (created with the directory if missing)."""
        try:
            self.wallet_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise WalletDBError(f"cannot open {self.lock_path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def load(self) -> dict[str, Any]:
        """The document (the empty one when the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return copy.deepcopy(self._empty)
        except OSError as exc:
            raise WalletDBError(f"cannot read {self.path}: {exc}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise WalletDBError(f"{self.path} is too large to be a {self.what} file")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise WalletDBError(f"{self.path} is not valid JSON; move it aside to start "
                                "afresh") from None
        version = self._empty["version"]
        if not isinstance(doc, dict) or doc.get("version") != version:
            raise WalletDBError(f"{self.path} is not a version {version} {self.what} file")
        for key, value in self._empty.items():
            if not isinstance(doc.setdefault(key, copy.deepcopy(value)), type(value)):
                raise WalletDBError(f"{self.path}: field {key!r} has the wrong type")
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        """Replace the file with ``doc`` durably (call under ``locked``)."""
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        try:
            replace_durably(self.path, data)
        except OSError as exc:
            raise WalletDBError(f"cannot write {self.path}: {exc}") from None

    @contextmanager
    def transaction(self, before_save: Callable[[dict[str, Any]], None] | None = None
                    ) -> Iterator[dict[str, Any]]:
        """Yield the document under the lock; if the block ends normally it is passed to
        ``before_save`` (when given) and saved."""
        with self.locked():
            doc = self.load()
            yield doc
            if before_save is not None:
                before_save(doc)
            self.save(doc)
