"""Fixtures shared by the training tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _reset_training_logger() -> Iterator[None]:
    # main() attaches a JSON handler to the captured stderr; drop it so no test logs to a closed stream.
    yield
    logger = logging.getLogger("training")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
