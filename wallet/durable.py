"""Crash-safe small-file writes shared by the wallet's key files, records and ticket files."""

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or link inside it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (must not exist) with ``mode``, write ``data`` and fsync it.

    Raises ``FileExistsError`` or another ``OSError``.
    """
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace ``path`` with ``data``: temp file, fsync, rename, fsync dir.

    Raises ``OSError``; on failure the old file is untouched and no temp file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        write_synced(tmp, data, mode)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
