import io
import json
import logging

import numpy as np

from training.logs import JsonFormatter, configure_logging


def test_json_formatter_writes_message_level_and_extras():
    stream = io.StringIO()
    logger = configure_logging(stream=stream)
    try:
        logging.getLogger("training.x").info(
            "trained %s", "ok", extra={"threshold": np.float64(4.5), "files": ["a"]}
        )
        (line,) = stream.getvalue().splitlines()
        entry = json.loads(line)
        assert entry["message"] == "trained ok"
        assert entry["level"] == "INFO"
        assert entry["logger"] == "training.x"
        assert entry["threshold"] == 4.5
        assert entry["files"] == ["a"]
        assert entry["time"].endswith("+00:00")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


def test_configure_logging_twice_keeps_one_json_handler():
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    logger = configure_logging(stream=second)
    try:
        logger.warning("once")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "once"
        assert sum(isinstance(h.formatter, JsonFormatter) for h in logger.handlers) == 1
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


def test_exceptions_are_logged_as_a_field():
    error = ValueError("boom")
    record = logging.LogRecord(
        "training", logging.ERROR, __file__, 1, "failed", None, (ValueError, error, error.__traceback__)
    )

    entry = json.loads(JsonFormatter().format(record))

    assert entry["message"] == "failed"
    assert "ValueError: boom" in entry["exception"]
