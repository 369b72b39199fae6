"""``python3 -m anomaly_detector``: parse arguments, build the parts, run, map failures to exit codes."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .app import run
from .config import parse_config
from .errors import ConfigError, ModelError, SourceError, TransportError
from .logs import configure_logging

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_IO = 4


def _fail(log: logging.Logger, what: str, exc: Exception, code: int) -> int:
    # Expected failures: one clear line, no traceback (the message says what is wrong).
    log.error(what, extra={"error": str(exc), "exit_code": code})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    log = configure_logging()
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        return _fail(log, "invalid configuration", exc, EXIT_CONFIG)
    log = configure_logging(config.log_level)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Greengrass stops a component with SIGTERM: finish the current batch, then exit cleanly.
        log.info("stopping", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        summary = run(config, stop)
    except ConfigError as exc:
        return _fail(log, "invalid configuration", exc, EXIT_CONFIG)
    except ModelError as exc:
        return _fail(log, "model refused", exc, EXIT_MODEL)
    except (SourceError, TransportError) as exc:
        return _fail(log, "cannot start input/output", exc, EXIT_IO)
    # The summary is the one thing on stdout (logs go to stderr), so a demo can pipe it.
    sys.stdout.write(json.dumps(summary) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
