"""Write failures of the spool (disk full, a failing COMMIT, a closed database) and what the app and the
forwarder do about them: the error that happened is the one reported, the in-memory counters stay equal to
what is on disk, one bad event costs only itself, and nothing stops the forwarder thread."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from greengrass_components.anomaly_detector.batch import Decision
from greengrass_components.anomaly_detector.errors import SpoolError
from greengrass_components.anomaly_detector.events import AnomalyEvent, EventBuilder
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.logs import LOGGER_NAME
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.spool import Spool, SpooledEvent, SpoolItem
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .helpers import ListSource
from .test_app import make_app


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Records of the component's loggers (they do not propagate to pytest's root handler)."""
    handler = Recorder()
    records = handler.records
    logger = logging.getLogger(LOGGER_NAME)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def on_disk(spool: Spool) -> tuple[int, int]:
    row = sqlite3.connect(spool.path).execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
    )
    count, size = row.fetchone()
    return int(count), int(size)


def item(event_id: str, size: int = 10) -> SpoolItem:
    return SpoolItem(event_id, "s", "t", b"x" * size, 0.0)


class FailingCommit:
    """The spool's connection, except that the next COMMIT fails (an I/O error at the worst moment)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.armed = True

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_disk_full_reports_the_real_error_and_keeps_counters_true(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=7_000, policy="drop_newest")
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count={pages + 1}")  # the disk is full for a moment

    # sqlite rolls back by itself on SQLITE_FULL; an unconditional ROLLBACK used to raise "cannot
    # rollback - no transaction is active" instead, and the counters kept the failed rows.
    with pytest.raises(SpoolError, match="database or disk is full"):
        spool.put_many([item("a", 3000), item("b", 3000)])
    assert (spool.depth, spool.bytes_used) == on_disk(spool) == (0, 0)

    spool._db.execute("PRAGMA max_page_count=1073741823")  # space is back
    results = spool.put_many([item("c", 3000), item("d", 3000)])
    assert [r.stored for r in results] == [True, True]  # not refused by a spool that thought it was full
    assert (spool.depth, spool.bytes_used) == on_disk(spool) == (2, 6000)


def test_a_failing_commit_rolls_back_and_changes_no_counter(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=25, policy="drop_oldest")
    spool.put_many([item("a"), item("b")])
    failing = FailingCommit(spool._db)
    spool._db = failing  # type: ignore[assignment]

    with pytest.raises(SpoolError, match="disk I/O error"):
        spool.put_many([item("c")])  # evicts "a" to make room, then the COMMIT fails

    assert not failing.in_transaction  # rolled back, not left open for the next BEGIN to trip on
    assert (spool.depth, spool.bytes_used) == on_disk(spool) == (2, 20)
    assert [e.event_id for e in spool.peek()] == ["a", "b"]  # the eviction was rolled back too
    assert spool.dropped() == {}
    spool.put_many([item("c")])
    assert [e.event_id for e in spool.peek()] == ["b", "c"]
    assert (spool.depth, spool.bytes_used) == on_disk(spool) == (2, 20)


def test_reads_of_a_broken_spool_raise_spool_error() -> None:
    spool = Spool(":memory:")
    spool.close()
    with pytest.raises(SpoolError, match="cannot read the spool :memory:"):
        spool.peek()
    with pytest.raises(SpoolError, match="cannot read the drop counters of the spool :memory:"):
        spool.dropped()


def test_an_exception_in_on_sent_does_not_stop_the_forwarder() -> None:
    spool, transport = Spool(":memory:"), InMemoryTransport()
    seen: list[str] = []

    def on_sent(event: SpooledEvent) -> None:
        seen.append(event.event_id)
        if len(seen) == 1:
            raise KeyError("timestamp")  # a bug in the callback

    for event_id in ("e1", "e2"):
        spool.put(event_id=event_id, stream="s", topic="t", payload=event_id.encode(), created_at=0.0)
    forwarder = Forwarder(spool, transport, retry_initial_s=0.01, idle_poll_s=0.01, on_sent=on_sent)
    with captured_logs() as records:
        forwarder.start()
        deadline = time.monotonic() + 5
        while spool.depth and time.monotonic() < deadline:
            time.sleep(0.01)
        forwarder.close()

    # The thread used to die silently on the KeyError: e2 stayed in the spool until a restart.
    assert [p.payload for p in transport.published] == [b"e1", b"e2"]
    assert seen == ["e1", "e2"]
    (failure,) = [r for r in records if r.getMessage() == "forwarder pass failed"]
    assert failure.levelno == logging.ERROR
    assert failure.exc_info is not None
    assert failure.exc_info[0] is KeyError


def closed_event(event_id: str) -> AnomalyEvent:
    builder = EventBuilder(thing_name="gw-01", id_factory=lambda: event_id)
    window = np.array([[1.0], [2.0], [9.0]], dtype=np.float32)
    builder.offer(Decision("pump-1", 100.0, 5.0, 3.0, True, "v1", window), ("value",))
    (event,) = builder.close_all(("value",))
    return event


def test_an_event_that_cannot_be_encoded_costs_only_itself(model_path: Path) -> None:
    spool = Spool(":memory:")
    app = make_app(load_model(model_path), ListSource([]), InMemoryTransport(), spool=spool)
    bad = replace(closed_event("bad"), score=math.inf, peak_score=math.inf)

    with captured_logs() as records:
        app._spool_events([bad, closed_event("good")])  # used to raise ValueError and lose both

    assert [e.event_id for e in spool.peek()] == ["good"]
    assert app.stats.anomalies_spooled == 1
    assert app.stats.spool_dropped == 1
    (lost,) = [r for r in records if r.getMessage() == "event lost: it cannot be encoded"]
    assert lost.levelno == logging.ERROR
    assert lost.__dict__["event_id"] == "bad"
    assert "non-finite score" in lost.__dict__["error"]


def test_a_failing_spool_is_reported_once_a_minute_not_once_a_batch(model_path: Path) -> None:
    spool = Spool(":memory:")
    app = make_app(load_model(model_path), ListSource([]), InMemoryTransport(), spool=spool)
    spool.close()  # every write fails from now on

    with captured_logs() as records:
        app._spool_events([closed_event("e1")])
        app._spool_events([closed_event("e2")])

    assert app.stats.spool_dropped == 2  # both counted
    lost = [r for r in records if r.getMessage() == "events lost: spool write failed"]
    assert len(lost) == 1
    assert lost[0].levelno == logging.ERROR
    assert lost[0].__dict__["event_ids"] == ["e1"]


def test_a_checkpoint_whose_write_failed_is_written_with_the_next_batch(
    tmp_path: Path, model_path: Path
) -> None:
    spool = Spool(tmp_path / "s.db")
    builder = EventBuilder(thing_name="gw-01", id_factory=lambda: "open-1")
    app = make_app(load_model(model_path), ListSource([]), InMemoryTransport(), spool=spool, events=builder)
    window = np.array([[1.0], [2.0], [9.0]], dtype=np.float32)
    builder.offer(Decision("pump-1", 100.0, 5.0, 3.0, True, "v1", window), ("value",))
    spool._db = FailingCommit(spool._db)  # type: ignore[assignment]

    with captured_logs() as records:
        app._spool_events([])  # the batch changed an open event; its checkpoint write fails
    assert sqlite3.connect(spool.path).execute("SELECT COUNT(*) FROM open_events").fetchone() == (0,)
    assert [r.getMessage() for r in records] == ["open events not checkpointed: spool write failed"]
    app._spool_events([])  # nothing new, but the unsaved checkpoint is offered again

    assert Spool(tmp_path / "s.db").recover_open_events() == ("open-1",)
