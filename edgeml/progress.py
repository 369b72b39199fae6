"""Progress bars on stderr (stdout stays free for results and ``--json``).

``auto`` shows a bar only when stderr is a terminal, so logs of scripts and CI stay clean.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, Literal, TextIO

# tqdm ships no type information (no py.typed); the bar is a display detail behind this module.
from tqdm import tqdm

ProgressMode = Literal["auto", "on", "off"]
PROGRESS_MODES: Final[tuple[ProgressMode, ...]] = ("auto", "on", "off")
REFRESH_S: Final = 0.1
# training.evaluate logs one "[index/total] file" line per finished file; the bar follows those lines.
_FILE_DONE: Final = re.compile(r"^\[(\d+)/(\d+)\] ")


def _disable(mode: ProgressMode) -> bool | None:
    # tqdm's disable=None means "disable when the stream is not a terminal".
    return {"auto": None, "on": False, "off": True}[mode]


@contextmanager
def polled_bar(
    mode: ProgressMode,
    *,
    total: int | None,
    unit: str,
    desc: str,
    read: Callable[[], int],
    stream: TextIO | None = None,
) -> Iterator[None]:
    """A bar that a background thread moves to ``read()`` every ``REFRESH_S`` while the block runs."""
    bar = tqdm(total=total, unit=unit, desc=desc, file=stream or sys.stderr, disable=_disable(mode))
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(REFRESH_S):
            bar.update(read() - bar.n)

    thread = threading.Thread(target=follow, name="edgeml-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.update(read() - bar.n)
        bar.close()


class _FileDoneHandler(logging.Handler):
    def __init__(self, bar: tqdm) -> None:
        super().__init__(level=logging.INFO)
        self._bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        match = _FILE_DONE.match(record.getMessage())
        if match is None:
            return
        done, total = int(match[1]), int(match[2])
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)


@contextmanager
def file_bar(mode: ProgressMode, *, logger: str, desc: str, stream: TextIO | None = None) -> Iterator[None]:
    """A per-file bar driven by the ``[i/n]`` progress lines an evaluation logs on ``logger``."""
    bar = tqdm(total=None, unit="file", desc=desc, file=stream or sys.stderr, disable=_disable(mode))
    handler = _FileDoneHandler(bar)
    target = logging.getLogger(logger)
    saved_level = target.level
    # The progress lines are INFO; the handlers that print logs keep their own (CLI-chosen) level.
    target.setLevel(logging.INFO)
    target.addHandler(handler)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(saved_level)
        bar.close()
