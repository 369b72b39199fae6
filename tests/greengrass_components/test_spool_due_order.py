"""The ack mode's due order read through indexes (docs/contracts.md §6c): every read of a resend pass is a
range of an index, never a scan or a sort of the outbox, so the sqlite work per resend does not grow with
the backlog; the order is exactly that of the one ORDER BY query it replaces; a spool file written without
those indexes gets them on open."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from greengrass_components.anomaly_detector.errors import SpoolError
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.spool import Spool, SpooledEvent, SpoolItem
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .test_ack_resend_policy import Clock, SlowCloud
from .test_spool_write_failures import captured_logs

TIMEOUT = 30.0
NOW = 1_800_000_000.0
YEAR = 365 * 86400.0
BUDGET = 700  # publishes in the pass-order test
DUE_ORDER_INDEXES = {"outbox_unsent", "outbox_due", "outbox_undated"}

# The query the indexed reads replaced: the specification of the due order they must keep.
REFERENCE_ORDER = (
    "SELECT seq FROM outbox WHERE sent_at IS NULL OR (sent_at IS NOT NULL AND "
    "(COALESCE(due_at, sent_at + :timeout) <= :now OR sent_at > :now + :timeout)) "
    "ORDER BY sent_at IS NOT NULL, COALESCE(due_at, sent_at + :timeout), seq"
)


class ReferenceSpool(Spool):
    """``peek_due`` as that one query, cut to ``resend_limit`` resends the way the forwarder cut its
    batch of 100 before (it sent the new events of the batch and its first 10 resends, then looked again);
    ``after`` is not used: the reference reads the whole order each time."""

    def peek_due(
        self,
        limit: int,
        *,
        now: float,
        ack_timeout_s: float,
        resend_limit: int | None = None,
        after: SpooledEvent | None = None,
    ) -> list[SpooledEvent]:
        with self._lock:
            seqs = [
                int(r[0])
                for r in self._db.execute(
                    f"{REFERENCE_ORDER} LIMIT :limit", {"now": now, "timeout": ack_timeout_s, "limit": limit}
                )
            ]
        events = {e.seq: e for e in self.peek(100_000)}
        rows = [events[seq] for seq in seqs]
        unsent = [e for e in rows if e.sent_at is None]
        return unsent + [e for e in rows if e.sent_at is not None][:resend_limit]


def payload(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id}).encode()


def fill(spool: Spool, n: int, mark: Callable[[Spool, SpooledEvent], None], prefix: str = "e") -> None:
    """``n`` events, each then marked by ``mark`` (or left unsent)."""
    spool.put_many([SpoolItem(f"{prefix}{i}", "s", "t", payload(f"{prefix}{i}"), 0.0) for i in range(n)])
    for event in spool.peek(100_000)[-n:]:
        mark(spool, event)


def overdue(spool: Spool, e: SpooledEvent) -> None:
    # Sent in the last hour, due again in a spread order (not seq order) before NOW.
    spool.mark_sent(e.seq, at=NOW - 3600 + e.seq, due_at=NOW - 1800 + (e.seq * 7919) % 1000)


def overdue_undated(spool: Spool, e: SpooledEvent) -> None:
    # As a component before due_at existed left it: due TIMEOUT after sent_at.
    spool.mark_sent(e.seq, at=NOW - 3600 + (e.seq * 7919) % 1000)


def sent_in_the_future(spool: Spool, e: SpooledEvent) -> None:
    # The wall clock went back a year (a device without a real-time clock, restarted): due now.
    at = NOW + YEAR + (e.seq * 7919) % 1000
    spool.mark_sent(e.seq, at=at, due_at=at + TIMEOUT * 2 ** (e.seq % 7))


def awaiting(spool: Spool, e: SpooledEvent) -> None:
    spool.mark_sent(e.seq, at=NOW - 1, due_at=NOW + TIMEOUT * 2 ** (e.seq % 7))


def undated_in_the_future(spool: Spool, e: SpooledEvent) -> None:
    spool.mark_sent(e.seq, at=NOW + YEAR + e.seq)


def unsent(_spool: Spool, _e: SpooledEvent) -> None:
    pass


class RecordingConnection:
    """The spool's connection, recording every SELECT it runs (with its parameters)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.selects: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith("SELECT"):
            self.selects.append((sql, args))
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def plan(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[str]:
    return [str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", *args)]


def test_every_read_of_a_resend_pass_is_an_index_range_not_a_scan_or_a_sort(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    for mark in (unsent, overdue, overdue_undated, awaiting, sent_in_the_future, undated_in_the_future):
        fill(spool, 25, mark, prefix=mark.__name__)
    db = spool._db
    recording = RecordingConnection(db)
    spool._db = recording  # type: ignore[assignment]
    forwarder = Forwarder(spool, InMemoryTransport(), ack_timeout_s=TIMEOUT, wall_clock=lambda: NOW)

    assert forwarder.send_pending()
    assert forwarder.unsent() == 0  # due_count, which drain() polls every 10 ms
    assert (forwarder.sent, forwarder.resent) == (125, 100)  # all but the 25 still awaiting their ack

    whole_outbox: list[tuple[str, str]] = []
    used: set[str] = set()
    for sql, args in recording.selects:
        for detail in plan(db, sql, args):
            # A bare "SCAN outbox" reads every row; a TEMP B-TREE sorts what it read (the old ORDER BY).
            if detail == "SCAN outbox" or "TEMP B-TREE" in detail:
                whole_outbox.append((sql, detail))
            used.update(re.findall(r"USING (?:COVERING )?INDEX (\w+)", detail))
    assert whole_outbox == []
    assert used >= DUE_ORDER_INDEXES


def sqlite_steps_per_resend(n: int, mark: Callable[[Spool, SpooledEvent], None]) -> float:
    """sqlite virtual-machine instructions per resend in one pass over ``n`` due rows: the work, counted
    (deterministic for a given sqlite), not timed."""
    spool = Spool(":memory:")
    fill(spool, n, mark)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    spool._db.set_progress_handler(count, 10)
    forwarder = Forwarder(spool, InMemoryTransport(), ack_timeout_s=TIMEOUT, wall_clock=lambda: NOW)
    assert forwarder.send_pending()
    assert forwarder.resent == n
    return steps * 10 / n


@pytest.mark.parametrize(
    "mark",
    [overdue, overdue_undated, sent_in_the_future],
    ids=["overdue", "overdue-without-due_at", "clock-went-back"],
)
def test_the_sqlite_work_per_resend_does_not_grow_with_the_backlog(
    mark: Callable[[Spool, SpooledEvent], None],
) -> None:
    # A read per batch that scanned and sorted the outbox cost ~7 times more per resend at 3,000 rows
    # than at 300 (a 20,000-row pass took 12 to 14 s, almost all in those reads); reads along an index
    # cost the same per resend at any size.
    small, large = sqlite_steps_per_resend(300, mark), sqlite_steps_per_resend(3000, mark)
    assert large < 1.25 * small, (small, large)


def sqlite_steps_of_an_idle_pass(n: int, mark: Callable[[Spool, SpooledEvent], None]) -> int:
    """sqlite instructions of a pass that finds nothing due, and of the due count drain() polls."""
    spool = Spool(":memory:")
    fill(spool, n, mark)
    forwarder = Forwarder(spool, InMemoryTransport(), ack_timeout_s=TIMEOUT, wall_clock=lambda: NOW)
    # Rows sent "in the future" are resent now; the next pass looks for more once, from the start, and
    # finds none. Rows awaiting their ack are not due: these passes send nothing.
    assert forwarder.send_pending()
    assert forwarder.send_pending()
    sent = forwarder.sent
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    spool._db.set_progress_handler(count, 1)
    assert forwarder.send_pending()
    assert forwarder.unsent() == 0
    assert forwarder.sent == sent
    return steps


@pytest.mark.parametrize(
    "mark", [awaiting, sent_in_the_future], ids=["awaiting", "after-the-clock-went-back"]
)
def test_a_pass_with_nothing_due_costs_the_same_however_many_rows_await_their_ack(
    mark: Callable[[Spool, SpooledEvent], None],
) -> None:
    # The forwarder makes such a pass every idle poll (1 s) and drain() counts every 10 ms: a read of the
    # whole outbox each time was a scan of every row awaiting an ack.
    small, large = sqlite_steps_of_an_idle_pass(300, mark), sqlite_steps_of_an_idle_pass(3000, mark)
    assert large <= 1.1 * small, (small, large)


def reference_seqs(spool: Spool, now: float, limit: int) -> list[int]:
    with spool._lock:
        rows = spool._db.execute(
            f"{REFERENCE_ORDER} LIMIT :limit", {"now": now, "timeout": TIMEOUT, "limit": limit}
        ).fetchall()
    return [int(r[0]) for r in rows]


def random_backlog(spool: Spool, seed: int, n: int = 120) -> None:
    """Rows of every kind, with whole-second times so that due times tie often (seq decides)."""
    rng = random.Random(seed)
    spool.put_many([SpoolItem(f"e{i}", "s", "t", payload(f"e{i}"), 0.0) for i in range(n)])
    for event in spool.peek(n):
        kind = rng.randrange(6)
        at = NOW + rng.randrange(-3000, 60) if kind < 4 else NOW + rng.randrange(200, 400)
        if kind == 0:
            continue  # never sent
        if kind in (1, 4):
            spool.mark_sent(event.seq, at=at)  # no due_at: TIMEOUT after at
        else:
            spool.mark_sent(event.seq, at=at, due_at=at + rng.choice([TIMEOUT, 60, 120, 1920, 7]))


@pytest.mark.parametrize("seed", range(5))
def test_peek_due_keeps_the_order_of_the_query_it_replaces(tmp_path: Path, seed: int) -> None:
    spool = Spool(tmp_path / "spool.db")
    random_backlog(spool, seed)
    # Later and later, then the wall clock gone back (rows sent "in the future" are due too).
    for now in (NOW - 400, NOW - 100, NOW, NOW + 100, NOW + 2000, NOW + 9000):
        for limit in (1, 7, 50, 1000):
            got = [e.seq for e in spool.peek_due(limit, now=now, ack_timeout_s=TIMEOUT)]
            assert got == reference_seqs(spool, now, limit), (now, limit)
        assert spool.due_count(now=now, ack_timeout_s=TIMEOUT) == len(reference_seqs(spool, now, -1))


@pytest.mark.parametrize("seed", range(3))
def test_a_resend_pass_sends_in_the_order_it_did_before(tmp_path: Path, seed: int) -> None:
    """The same backlog through the forwarder twice, over the indexed reads and over the reference: the
    same publishes in the same order, new events arriving mid-pass, the clock moving a second a publish
    (rows resent early in the pass are due again before it ends), and the same rows left behind."""

    def run(spool: Spool) -> tuple[list[str], list[tuple[int, int, float | None, float | None]]]:
        random_backlog(spool, seed)
        clock = Clock(NOW - 200)  # rows sent up to 400 s ahead of it: the clock went back

        def new_event(count: int) -> None:
            if count % 37 == 0:
                spool.put(
                    event_id=f"new{count}",
                    stream="s",
                    topic="t",
                    payload=payload(f"new{count}"),
                    created_at=0,
                )

        cloud = SlowCloud(clock, budget=BUDGET, during=new_event)
        forwarder = Forwarder(
            spool, cloud, ack_timeout_s=TIMEOUT, wall_clock=clock, clock=clock, jitter=lambda: 0.5
        )
        while len(cloud.published) < BUDGET:
            forwarder.send_pending()
            clock.now += 1.0
        left = [(e.seq, e.resends, e.sent_at, e.due_at) for e in spool.peek(100_000)]
        return cloud.ids(), left

    indexed = run(Spool(tmp_path / "indexed.db"))
    reference = run(ReferenceSpool(tmp_path / "reference.db"))
    assert len(indexed[0]) == BUDGET
    assert indexed == reference


# The outbox as the component before the due-order indexes wrote it: ack-mode columns, one index.
PREVIOUS_SCHEMA = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    due_at REAL,
    resends INTEGER NOT NULL DEFAULT 0,
    strikes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE open_events (
    stream TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX outbox_event_id ON outbox(event_id);
"""


def indexes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {
            str(r[1]) for r in db.execute("PRAGMA index_list(outbox)") if not str(r[1]).startswith("sqlite_")
        }
    finally:
        db.close()


def test_a_spool_file_without_the_due_order_indexes_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    old.executescript(PREVIOUS_SCHEMA)
    old.executemany(
        "INSERT INTO outbox(event_id, stream, topic, payload, created_at, sent_at, due_at) "
        "VALUES (?, 's', 't', x'00', 0, ?, ?)",
        [
            ("new", None, None),
            ("late", NOW - 100, NOW - 10),
            ("undated", NOW - 200, None),  # due TIMEOUT after sent_at: NOW - 170, before "late"
            ("waiting", NOW - 5, NOW + 60),
        ],
    )
    old.commit()
    old.close()
    assert indexes(path) == {"outbox_event_id"}

    with captured_logs() as records:
        spool = Spool(path)
    added = [r for r in records if r.getMessage() == "spool migrated: outbox index added"]
    assert sorted(r.index for r in added) == sorted(DUE_ORDER_INDEXES)  # type: ignore[attr-defined]
    assert indexes(path) == {"outbox_event_id", *DUE_ORDER_INDEXES}
    assert [e.event_id for e in spool.peek_due(10, now=NOW, ack_timeout_s=TIMEOUT)] == [
        "new",
        "undated",
        "late",
    ]
    assert spool.due_count(now=NOW, ack_timeout_s=TIMEOUT) == 3
    assert (spool.depth, spool.awaiting_ack) == (4, 3)
    spool.close()

    with captured_logs() as records:
        Spool(path).close()  # the second open finds them: nothing to do, nothing logged
    assert [r for r in records if r.getMessage().startswith("spool migrated")] == []


def test_a_new_or_empty_spool_logs_no_migration(tmp_path: Path) -> None:
    with captured_logs() as records:
        Spool(tmp_path / "spool.db").close()
    assert indexes(tmp_path / "spool.db") == {"outbox_event_id", *DUE_ORDER_INDEXES}
    assert [r for r in records if r.getMessage().startswith("spool migrated")] == []


def test_a_spool_without_ack_mode_keeps_no_due_order_index_and_drops_those_left(tmp_path: Path) -> None:
    # Without ack mode every row is unsent until deleted: the due-order indexes would only cost writes.
    path = tmp_path / "spool.db"
    Spool(path).close()  # an ack-mode run left them
    assert indexes(path) == {"outbox_event_id", *DUE_ORDER_INDEXES}

    plain = Spool(path, ack_mode=False)
    plain.put(event_id="e1", stream="s", topic="t", payload=b"{}", created_at=1.0)
    assert [e.event_id for e in plain.peek()] == ["e1"]
    with pytest.raises(SpoolError, match="ack_mode=True"):
        plain.peek_due(10, now=2.0, ack_timeout_s=60.0)
    plain.close()
    assert indexes(path) == {"outbox_event_id"}

    again = Spool(path)  # ack mode again: the indexes come back, the row is there
    assert [e.event_id for e in again.peek_due(10, now=2.0, ack_timeout_s=60.0)] == ["e1"]
    again.close()
    assert indexes(path) == {"outbox_event_id", *DUE_ORDER_INDEXES}


def test_an_ack_mode_forwarder_refuses_a_spool_opened_without_ack_mode() -> None:
    with pytest.raises(ValueError, match="ack_mode=True"):
        Forwarder(Spool(":memory:", ack_mode=False), InMemoryTransport(), ack_timeout_s=60.0)
