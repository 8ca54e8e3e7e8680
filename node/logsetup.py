"""The node's logging: stderr plus a rotating ``<datadir>/node.log``, as text or JSON lines.

``setup_logging`` installs two handlers on the root logger: one on stderr and a
``logging.handlers.RotatingFileHandler`` on ``node.log`` (``node.log.1`` … ``node.log.N``
keep the older parts). ``text`` is the human format of every earlier version
(``<asctime> <LEVEL> <logger>: <message>``); ``json`` writes one JSON object per line
for log shippers (``ts`` ISO 8601 UTC, ``level``, ``logger``, ``msg``, and ``exc`` with
the traceback when there is one). DESIGN "Operators' view".
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
from pathlib import Path

LOG_FORMATS = ("text", "json")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # node.log rotates when it reaches 10 MiB
DEFAULT_BACKUPS = 5                    # node.log.1 … node.log.5 are kept
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``{ts, level, logger, msg[, exc]}`` (UTF-8, one line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``); ``ValueError`` otherwise."""
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    if log_format == "json":
        return JsonFormatter()
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")


def setup_logging(log_path: Path, level: str = "INFO", *, log_format: str = "text",
                  max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
    """Log at ``level`` to stderr and to ``log_path``, rotating at ``max_bytes`` bytes
    with ``backups`` older files kept (``max_bytes`` 0: never rotate).

    Raises ``OSError`` if ``log_path`` cannot be opened, ``ValueError`` for an unknown
    ``log_format``.
    """
    formatter = make_formatter(log_format)
    logging.raiseExceptions = False  # a full disk must not turn log lines into tracebacks
    root = logging.getLogger()
    root.setLevel(level)
    file_handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    for handler in (logging.StreamHandler(sys.stderr), file_handler):
        handler.setFormatter(formatter)
        root.addHandler(handler)
