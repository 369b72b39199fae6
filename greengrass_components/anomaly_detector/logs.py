"""Structured JSON logs on stderr (stdlib logging only, so the artifact needs no extra dependency)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TextIO

LOGGER_NAME = "anomaly_detector"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields are merged into the object."""

    # Attributes every LogRecord has; anything else came from ``extra`` and is logged as a field.
    _STANDARD: ClassVar[frozenset[str]] = frozenset(
        vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
    )

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Logger:
    """Attach a single JSON handler to the component logger (idempotent: replaces earlier handlers)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    # Greengrass captures stderr into the component log; propagating to root would print twice.
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


class RateLimitedLog:
    """Log the first occurrence of each kind at once, then at most one line per ``interval_s`` per kind,
    carrying how many were not logged in between (a flood of bad messages must not flood the log)."""

    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def warning(self, kind: str, message: str, **fields: object) -> bool:
        """Returns True when a line was written."""
        return self._log(logging.WARNING, kind, message, fields)

    def error(self, kind: str, message: str, **fields: object) -> bool:
        """Returns True when a line was written."""
        return self._log(logging.ERROR, kind, message, fields)

    def _log(self, level: int, kind: str, message: str, fields: dict[str, object]) -> bool:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval_s:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return False
        self._last[kind] = now
        skipped = self._unlogged.pop(kind, 0)
        self._logger.log(level, message, extra={"kind": kind, "not_logged_since_last": skipped, **fields})
        return True
