"""Durable store-and-forward spool for outgoing events: sqlite3 in WAL mode, bounded in bytes.

An event is committed here *before* anything tries to send it, and deleted only after the transport
confirmed delivery (PUBACK for MQTT QoS 1, "accepted by the nucleus" for IPC). So a broker outage or a
``kill -9`` of the process at any moment loses nothing: on restart the rows are still there and are sent
again (at-least-once; the ``event_id`` in each payload lets the cloud drop duplicates).

Rows are read back in insertion order (``seq``), so events of one stream leave in the order they were made.

Full spool policy (``SpoolPolicy``): the spool never grows past ``max_bytes``.
- ``drop_oldest`` (default): the oldest rows are deleted to make room, because during a long outage the
  newest anomalies are the most actionable. Every drop is counted per stream, persisted in the spool (so a
  restart does not forget it), logged as a warning, and reported in the heartbeat.
- ``drop_newest``: the new event is refused (counted and logged the same way); older evidence is kept.

Open events (not yet closed, so not yet in the outbox) are checkpointed in ``open_events``, one row per
stream holding the event as it would be sent if the process stopped now; the app writes those rows in the
transaction of the batch's closed events and deletes a row in the transaction that stores its closed
event. On start-up :meth:`Spool.recover_open_events` turns every row left there (the last run died with
the event open) into an outbox row, so it is sent like any other event. These rows are outside
``max_bytes``: at most one per stream, each at most one event.

Acknowledgement mode (the forwarder's ``ack_timeout_s`` > 0, docs/contracts.md §6c): a sent row is not
deleted but marked (``sent_at``, wall-clock seconds, and ``due_at``, when it is due again without an ack;
both persisted) and deleted only when the cloud acks its ``event_id`` (:meth:`Spool.ack`). A marked row
whose ack has not come by its ``due_at`` is due again (:meth:`Spool.peek_due`: never-sent rows first, so
new events do not wait behind resends); so is one left by an earlier run. ``resends`` (the backoff's
exponent) and ``strikes`` (the give-up count) are kept per row by :meth:`Spool.mark_sent`; the forwarder
decides with them, and :meth:`Spool.give_up` deletes a row the cloud never acks, counted as a drop. Rows
awaiting an ack are not safe yet: they count in ``depth``, ``bytes_used`` and the full-spool policy like
any other row.

The due order is read through partial indexes (``_INDEXES``), a few rows at a time: a resend pass over N
overdue rows costs O(N log N) and holds the lock for O(log N) per batch, never for a scan of the outbox.
A spool file without them gets them on open (:meth:`Spool._migrate`), like the ack-mode columns. Each index
is a write too (an ack-mode send appends about 3 pages to the WAL instead of 1): there is none for what an
in-memory bound answers (whether any row was sent "in the future"), and a spool opened without ack mode
(``ack_mode=False``, the component's default configuration) keeps none of them (~10 us per event less),
dropping those an ack-mode run left.

In-memory counters (``depth``, ``bytes_used``, ``awaiting_ack``) change only once a transaction has
committed, so a failed write (disk full, I/O error) leaves them equal to what is on disk.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import SpoolError
from .logs import get_logger

log = get_logger("spool")

SpoolPolicy = Literal["drop_oldest", "drop_newest"]
SPOOL_POLICIES: tuple[SpoolPolicy, ...] = ("drop_oldest", "drop_newest")
IN_MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
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
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS open_events (
    stream TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    updated_at REAL NOT NULL
);
"""
# Created after the migration (a spool written by an older component lacks some of the ack-mode columns),
# by name so that _migrate can tell which ones an existing file lacks. The due-order ones are partial, so
# each holds only the rows its queries look for and costs a write only when such a row changes; every
# index ends with the rowid (seq), so "ORDER BY <column>, seq" is index order. Their queries are below.
_INDEXES: tuple[tuple[str, str], ...] = (
    ("outbox_event_id", "CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox(event_id)"),
)
# Only ack mode reads the due order (peek_due, due_count). Without it every row is unsent until deleted, so
# these would only cost writes (~10 us per event for outbox_unsent): they exist only in an ack-mode spool.
_ACK_INDEXES: tuple[tuple[str, str], ...] = (
    # New events, oldest first: without it, the first unsent row is found behind every row awaiting an ack.
    ("outbox_unsent", "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(seq) WHERE sent_at IS NULL"),
    # Sent rows in their due order: the overdue ones are a range at its start.
    ("outbox_due", "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(due_at) WHERE due_at IS NOT NULL"),
    # Sent rows without a due_at (an older component, or mark_sent without one) are due ack_timeout_s after
    # sent_at: sent_at order is their due order. Empty unless such rows exist.
    (
        "outbox_undated",
        "CREATE INDEX IF NOT EXISTS outbox_undated ON outbox(sent_at) "
        "WHERE sent_at IS NOT NULL AND due_at IS NULL",
    ),
)


# Added in this order by _migrate to an outbox created without them.
_ACK_COLUMNS = (
    ("sent_at", "REAL"),
    ("due_at", "REAL"),
    ("resends", "INTEGER NOT NULL DEFAULT 0"),
    ("strikes", "INTEGER NOT NULL DEFAULT 0"),
)
# The due order (peek_due). A sent row is due again at due_at; a row from a component that did not store
# due_at (or a caller that gave none), ack_timeout_s after sent_at; a sent_at more than the timeout in the
# future means the wall clock went back, and such a row is due too. Rows go in the order never sent (by
# seq), then overdue (by when due, then seq), then due because the clock went back (the same order: they
# are due later than "now", so after every overdue one). Each part is one query on the index it names: a
# range read in index order with a LIMIT, so a batch costs O(log N + limit) however many rows wait.
# INDEXED BY is there for what sqlite documents it for: a plan that must not change. The planner has no
# statistics here and, given two indexes a query could use, may take the one whose range is every sent
# row; pinned, a query its index cannot serve fails to prepare instead of scanning. The plans are
# asserted in tests/greengrass_components/test_spool_due_order.py.
# Parameters: :now (wall clock), :timeout (ack_timeout_s), :limit; :bound, :after_due, :after_seq below.
_COLUMNS = "seq, event_id, stream, topic, payload, sent_at, due_at, resends, strikes"
_UNSENT_FROM = "FROM outbox INDEXED BY outbox_unsent WHERE sent_at IS NULL"
_DATED_OVERDUE_FROM = "FROM outbox INDEXED BY outbox_due WHERE due_at <= :now AND sent_at IS NOT NULL"
# "sent_at + :timeout <= :now" decides; "sent_at <= :bound" (a hair above :now - :timeout, so rounding
# cannot leave a due row out) is the same range in a form the index can seek.
_UNDATED_OVERDUE_FROM = (
    "FROM outbox INDEXED BY outbox_undated "
    "WHERE due_at IS NULL AND sent_at <= :bound AND sent_at + :timeout <= :now"
)
# Rows due because the clock went back (read only while Spool._sent_ceiling says there may be some), in
# due order from a position on (:after_due, :after_seq; -inf and 0: from the start). Read along
# outbox_due, passing over the rows not sent "in the future": the rows this pass resent are among them
# (resent, a row is due at the gone-back clock's now + its backoff, ahead of the rows still to go), so
# without the position each batch would pass over all of those again.
_DATED_BACK_FROM = "FROM outbox INDEXED BY outbox_due WHERE due_at > :now AND sent_at > :now + :timeout"
_DATED_BACK_AFTER_FROM = (
    "FROM outbox INDEXED BY outbox_due WHERE due_at >= :after_due "
    "AND (due_at, seq) > (:after_due, :after_seq) AND sent_at > :now + :timeout"
)
# Resent, these rows get a due_at and leave the index: the position only keeps the order exact.
_UNDATED_BACK_FROM = (
    "FROM outbox INDEXED BY outbox_undated WHERE due_at IS NULL AND sent_at > :now + :timeout "
    "AND (sent_at + :timeout, seq) > (:after_due, :after_seq)"
)
_DUE_COUNT = (
    f"SELECT (SELECT COUNT(*) {_UNSENT_FROM}) + (SELECT COUNT(*) {_DATED_OVERDUE_FROM}) "
    f"+ (SELECT COUNT(*) {_UNDATED_OVERDUE_FROM})"
)
_BACK_COUNT = f"SELECT (SELECT COUNT(*) {_DATED_BACK_FROM}) + (SELECT COUNT(*) {_UNDATED_BACK_FROM})"


def _due_params(now: float, ack_timeout_s: float) -> dict[str, float]:
    return {
        "now": now,
        "timeout": ack_timeout_s,
        # Four units in the last place of the magnitudes involved cover the rounding of both sides.
        "bound": now - ack_timeout_s + 4 * math.ulp(abs(now) + abs(ack_timeout_s)),
        "after_due": -math.inf,  # no position yet: from the start
        "after_seq": 0,
    }


@dataclass(frozen=True)
class SpooledEvent:
    seq: int
    event_id: str
    stream: str
    topic: str
    payload: bytes
    # When it was last sent in ack mode (wall-clock seconds); None: never sent, so not a resend.
    sent_at: float | None = None
    resends: int = 0  # times sent again for want of an ack
    strikes: int = 0  # of those, waits during which the cloud acked other events but not this one
    # When it is due again without an ack (wall clock); None: never sent, or ack_timeout_s after sent_at.
    due_at: float | None = None

    def when_due(self, ack_timeout_s: float) -> float:
        """When it is due again without an ack (its place in the resend order, with ``seq``)."""
        if self.due_at is not None:
            return self.due_at
        if self.sent_at is None:
            raise ValueError(f"event {self.event_id} was never sent: it is not awaiting an ack")
        return self.sent_at + ack_timeout_s


@dataclass(frozen=True)
class SpoolItem:
    """One event to store (``put_many``)."""

    event_id: str
    stream: str
    topic: str
    payload: bytes
    created_at: float


@dataclass(frozen=True)
class OpenEvent:
    """The checkpoint of a stream's open event: the payload to send if the process stops now."""

    event_id: str
    stream: str
    topic: str
    payload: bytes
    updated_at: float


@dataclass(frozen=True)
class PutResult:
    stored: bool
    dropped: int  # rows removed (drop_oldest) or 1 if this event was refused (drop_newest)


@dataclass(frozen=True)
class AckResult:
    deleted: int  # rows deleted (their events are stored in the cloud)
    unknown: int  # distinct ids that matched no row (acked before, dropped, or never ours)


@dataclass
class _Tx:
    """Counters as they will be once the transaction commits (applied to the spool only then)."""

    depth: int
    bytes: int
    awaiting: int
    sent_ceiling: float
    warnings: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    def removed(self, size: int, sent: object) -> None:
        """One row of ``size`` payload bytes left the outbox (``sent``: it was awaiting an ack)."""
        self.depth -= 1
        self.bytes -= int(size)
        self.awaiting -= int(bool(sent))


class Spool:
    """Thread-safe (one connection behind a lock): the app thread writes, the forwarder reads/deletes."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        policy: SpoolPolicy = "drop_oldest",
        synchronous: Literal["FULL", "NORMAL"] = "NORMAL",
        ack_mode: bool = True,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if policy not in SPOOL_POLICIES:
            raise ValueError(f"policy must be one of {SPOOL_POLICIES}, got {policy!r}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self.policy: SpoolPolicy = policy
        self.ack_mode = ack_mode
        self._lock = threading.Lock()
        try:
            if self.path != IN_MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each put is one transaction.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a committed put survives a kill -9 of the process (the WAL is written before
            # COMMIT returns) without an fsync per event in the scoring thread; FULL adds power-loss
            # durability at the cost of one fsync (milliseconds on SD cards) per event.
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
            self._migrate()
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COUNT(sent_at), MAX(sent_at) FROM outbox"
            ).fetchone()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        self._depth = int(row[0])
        self._bytes = int(row[1])
        self._awaiting = int(row[2])
        # No row on disk has a later sent_at: while it is at most now + ack_timeout_s, no row is due because
        # the clock went back, and peek_due does not look for any. Raised by mark_sent, lowered by peek_due
        # once it found none.
        self._sent_ceiling = -math.inf if row[3] is None else float(row[3])

    def _migrate(self) -> None:
        """Add the ack-mode columns a spool file written by an older component lacks: ``sent_at`` (its rows
        become "not sent"), ``due_at`` (NULL: due ``ack_timeout_s`` after ``sent_at``), ``resends`` and
        ``strikes`` (0); then the indexes it lacks (``_INDEXES``).

        A column with a constant default is a change to the schema only (no row is rewritten), and a
        component older than this one still reads and writes the table: it names its columns, and sqlite
        keeps the indexes up to date whoever writes. Building an index reads the outbox once (about 15 ms
        for 20,000 rows), on this open only; logged when the outbox has rows, so not for a new spool.
        """
        columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(outbox)")}
        for name, definition in _ACK_COLUMNS:
            if name not in columns:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {definition}")
                log.info("spool migrated: outbox column added", extra={"spool": self.path, "column": name})
        indexes = {
            str(r[0])
            for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'"
            )
        }
        wanted = _INDEXES + (_ACK_INDEXES if self.ack_mode else ())
        for name, _ in () if self.ack_mode else _ACK_INDEXES:
            if name in indexes:  # left by an ack-mode run: without ack mode it would only cost writes
                self._db.execute(f"DROP INDEX {name}")
                log.info("spool: ack-mode index dropped", extra={"spool": self.path, "index": name})
        missing = [(name, sql) for name, sql in wanted if name not in indexes]
        if not missing:
            return
        has_rows = self._db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None
        for name, sql in missing:
            self._db.execute(sql)
            if has_rows:
                log.info("spool migrated: outbox index added", extra={"spool": self.path, "index": name})

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def awaiting_ack(self) -> int:
        """Rows sent in ack mode whose ack has not come yet (still counted in ``depth``)."""
        return self._awaiting

    @contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        """One write transaction; the counters take the ``_Tx`` values only once COMMIT succeeded."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            tx = _Tx(
                depth=self._depth, bytes=self._bytes, awaiting=self._awaiting, sent_ceiling=self._sent_ceiling
            )
            try:
                yield tx
                db.execute("COMMIT")
            except BaseException:
                # sqlite has already rolled back after some errors (SQLITE_FULL, I/O errors); a ROLLBACK
                # then would raise "no transaction is active" and hide the real error.
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error as rollback_error:
                        log.error("spool: rollback failed", extra={"error": str(rollback_error)})  # noqa: TRY400 - the first error is the one raised
                raise
            self._depth, self._bytes, self._awaiting = tx.depth, tx.bytes, tx.awaiting
            self._sent_ceiling = tx.sent_ceiling

    def _bump(self, name: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def put(self, *, event_id: str, stream: str, topic: str, payload: bytes, created_at: float) -> PutResult:
        """Store one event durably (committed when this returns), applying the full-spool policy."""
        return self.put_many([SpoolItem(event_id, stream, topic, payload, created_at)])[0]

    def put_many(
        self,
        items: Sequence[SpoolItem],
        *,
        open_events: Sequence[OpenEvent] = (),
        closed_streams: Sequence[str] = (),
    ) -> list[PutResult]:
        """Store events durably in ONE transaction (all committed when this returns), in order.

        The app spools every event of a micro-batch this way before the forwarder may send any of them:
        one commit per batch instead of one per event, with the same at-least-once guarantee. In the same
        transaction the checkpoints of ``closed_streams`` are deleted, then ``open_events`` are written
        (one per stream, replacing the stream's earlier one), so an event is always either checkpointed
        or in the outbox, never both and never neither.
        """
        if not items and not open_events and not closed_streams:
            return []
        results: list[PutResult] = []
        try:
            with self._transaction() as tx:
                for item in items:
                    results.append(self._put_in(tx, item))
                self._db.executemany(
                    "DELETE FROM open_events WHERE stream = ?", [(stream,) for stream in closed_streams]
                )
                self._db.executemany(
                    "INSERT INTO open_events(stream, event_id, topic, payload, updated_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT(stream) DO UPDATE SET event_id = excluded.event_id, "
                    "topic = excluded.topic, payload = excluded.payload, updated_at = excluded.updated_at",
                    [(e.stream, e.event_id, e.topic, e.payload, e.updated_at) for e in open_events],
                )
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write to spool {self.path}: {exc}") from exc
        for message, fields in tx.warnings:
            log.warning(message, extra=fields)
        return results

    def recover_open_events(self) -> tuple[str, ...]:
        """Move the checkpoints a run left (it died with those events open) to the outbox, under the
        full-spool policy like any event; the ids of those stored.

        Call it once on start-up, before the first write: a new checkpoint of the same stream would
        replace the old one. Not done on open, so that opening a spool to look at it changes nothing.
        """
        stored: list[str] = []
        try:
            with self._transaction() as tx:
                rows = self._db.execute(
                    "SELECT event_id, stream, topic, payload, updated_at FROM open_events ORDER BY rowid"
                ).fetchall()
                for event_id, stream, topic, payload, updated_at in rows:
                    item = SpoolItem(
                        str(event_id), str(stream), str(topic), bytes(payload), float(updated_at)
                    )
                    if self._put_in(tx, item).stored:
                        stored.append(item.event_id)
                self._db.execute("DELETE FROM open_events")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot recover open events from spool {self.path}: {exc}") from exc
        for message, fields in tx.warnings:
            log.warning(message, extra=fields)
        return tuple(stored)

    def _put_in(self, tx: _Tx, item: SpoolItem) -> PutResult:
        size = len(item.payload)
        if size > self.max_bytes:
            self._bump(f"dropped:{item.stream}", 1)
            tx.warnings.append(
                (
                    "spool: event dropped",
                    {"stream": item.stream, "reason": "event larger than the whole spool"},
                )
            )
            return PutResult(stored=False, dropped=1)
        dropped = 0
        if tx.bytes + size > self.max_bytes:
            if self.policy == "drop_newest":
                self._bump(f"dropped:{item.stream}", 1)
                tx.warnings.append(
                    (
                        "spool full: new event dropped (policy drop_newest)",
                        {"stream": item.stream, "event_id": item.event_id, "spool_bytes": tx.bytes},
                    )
                )
                return PutResult(stored=False, dropped=1)
            dropped = self._evict(tx, tx.bytes + size - self.max_bytes)
        self._db.execute(
            "INSERT INTO outbox(event_id, stream, topic, payload, created_at) VALUES (?,?,?,?,?)",
            (item.event_id, item.stream, item.topic, item.payload, item.created_at),
        )
        tx.depth += 1
        tx.bytes += size
        if dropped:
            tx.warnings.append(
                (
                    "spool full: oldest events dropped (policy drop_oldest)",
                    {"dropped": dropped, "spool_bytes": tx.bytes, "max_bytes": self.max_bytes},
                )
            )
        return PutResult(stored=True, dropped=dropped)

    def _evict(self, tx: _Tx, need: int) -> int:
        # Rows awaiting an ack are evicted like unsent ones: until the ack, the cloud may not have them.
        freed = 0
        victims: list[tuple[int, str, int, bool]] = []
        for seq, stream, size, sent in self._db.execute(
            "SELECT seq, stream, LENGTH(payload), sent_at IS NOT NULL FROM outbox ORDER BY seq"
        ):
            if freed >= need:
                break
            victims.append((int(seq), str(stream), int(size), bool(sent)))
            freed += int(size)
        for seq, stream, size, sent in victims:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._bump(f"dropped:{stream}", 1)
            tx.removed(size, sent)
        return len(victims)

    def peek(self, limit: int = 100) -> list[SpooledEvent]:
        """The oldest ``limit`` events, oldest first, sent or not."""
        try:
            with self._lock:
                return self._rows("FROM outbox ORDER BY seq", {}, limit)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc

    def peek_due(
        self,
        limit: int,
        *,
        now: float,
        ack_timeout_s: float,
        resend_limit: int | None = None,
        after: SpooledEvent | None = None,
    ) -> list[SpooledEvent]:
        """Ack mode: up to ``limit`` events to send now: first those never sent (oldest first), then
        those whose ack is overdue (past their ``due_at``, wall clock; the longest overdue first, so
        that rows resent a moment ago do not come back ahead of rows still waiting for their resend).
        At most ``resend_limit`` of them are resends (None: no bound but ``limit``).

        New events come first so that resends, however many, never hold them back (a resend pass can
        take longer than the timeout when no ack comes). A ``sent_at`` more than the timeout in the
        future means the wall clock went back (a device without a real-time clock, before its time is
        synced): such a row is due too rather than held until the clock catches up; those come last.

        ``after``: the last resend the caller handled in this pass. Rows due because the clock went back
        are then taken after it in the resend order: they do not leave that order when resent, as overdue
        rows do (resent, a row is due in the future), so the pass keeps its place among them instead of
        walking the index again from its start each batch. A row is never left out for it unless the
        clock goes back again during the pass (then it is due in the next pass).
        """
        self._require_ack_mode("peek_due")
        params = _due_params(now, ack_timeout_s)
        if after is not None:
            params.update(after_due=after.when_due(ack_timeout_s), after_seq=after.seq)
        try:
            with self._lock:
                events = self._rows(f"{_UNSENT_FROM} ORDER BY seq", params, limit)
                room = limit - len(events)
                if resend_limit is not None:
                    room = min(room, resend_limit)
                if room <= 0:
                    return events
                overdue = self._in_due_order(
                    self._rows(f"{_DATED_OVERDUE_FROM} ORDER BY due_at, seq", params, room)
                    + self._rows(f"{_UNDATED_OVERDUE_FROM} ORDER BY sent_at, seq", params, room),
                    ack_timeout_s,
                )[:room]
                room -= len(overdue)
                if room > 0 and self._sent_ceiling > now + ack_timeout_s:
                    from_start = params["after_due"] <= now  # the position passes over none of them
                    dated = _DATED_BACK_FROM if from_start else _DATED_BACK_AFTER_FROM
                    back = self._in_due_order(
                        self._rows(f"{dated} ORDER BY due_at, seq", params, room)
                        + self._rows(f"{_UNDATED_BACK_FROM} ORDER BY sent_at, seq", params, room),
                        ack_timeout_s,
                    )[:room]
                    if from_start and not back:
                        # None is due for the clock: every row has sent_at <= now + timeout but the overdue
                        # ones, and those are all in this batch (it had room left). Lowered, the ceiling
                        # spares later passes this read until the clock goes back again.
                        self._sent_ceiling = max(
                            [now + ack_timeout_s, *(e.sent_at for e in overdue if e.sent_at is not None)]
                        )
                    overdue += back
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return events + overdue

    def _require_ack_mode(self, method: str) -> None:
        if not self.ack_mode:
            # Its queries read the ack-mode indexes, which a spool opened without ack mode does not keep.
            raise SpoolError(f"Spool.{method} needs a spool opened with ack_mode=True ({self.path})")

    @staticmethod
    def _in_due_order(events: list[SpooledEvent], ack_timeout_s: float) -> list[SpooledEvent]:
        """Merge the parts (each already in this order) of one stretch of the resend order."""
        return sorted(events, key=lambda e: (e.when_due(ack_timeout_s), e.seq))

    def due_count(self, *, now: float, ack_timeout_s: float) -> int:
        """How many events :meth:`peek_due` would return without a limit (each part counted along its
        index: the cost is the count, not the outbox)."""
        self._require_ack_mode("due_count")
        params = _due_params(now, ack_timeout_s)
        try:
            with self._lock:
                count = int(self._db.execute(_DUE_COUNT, params).fetchone()[0])
                if self._sent_ceiling > now + ack_timeout_s:
                    # Only while rows sent "in the future" may be left; this one walks the rows awaiting.
                    count += int(self._db.execute(_BACK_COUNT, params).fetchone()[0])
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return count

    def contains(self, seq: int) -> bool:
        """Whether the row is still there (an ack deletes rows while the forwarder works on a batch)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT 1 FROM outbox WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return row is not None

    def _rows(self, from_clause: str, params: dict[str, float], limit: int) -> list[SpooledEvent]:
        """The events ``from_clause`` (``FROM outbox [WHERE ...] ORDER BY ...``) selects; under the lock."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} {from_clause} LIMIT :limit",
            {**params, "limit": limit},
        ).fetchall()
        return [
            SpooledEvent(
                seq=int(r[0]),
                event_id=str(r[1]),
                stream=str(r[2]),
                topic=str(r[3]),
                payload=bytes(r[4]),
                sent_at=None if r[5] is None else float(r[5]),
                due_at=None if r[6] is None else float(r[6]),
                resends=int(r[7]),
                strikes=int(r[8]),
            )
            for r in rows
        ]

    def delete(self, seq: int) -> None:
        """Forget an event once it was delivered."""
        try:
            with self._transaction() as tx:
                cursor = self._db.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING LENGTH(payload), sent_at IS NOT NULL", (seq,)
                )
                row = cursor.fetchone()
                if row is not None:
                    tx.removed(row[0], row[1])
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot remove a sent event from the spool {self.path}: {exc}") from exc

    def mark_sent(self, seq: int, *, at: float, due_at: float | None = None, strike: bool = False) -> None:
        """Ack mode: the transport confirmed the event; keep it, stamped ``at`` (wall clock), until acked,
        and due again at ``due_at`` (None: ``ack_timeout_s`` after ``at``). A row sent before counts one
        more resend, and one more strike with ``strike``.

        A row already gone (its ack came before this call: the cloud can be that fast) stays gone.
        """
        try:
            with self._transaction() as tx:
                row = self._db.execute("SELECT sent_at FROM outbox WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    return
                resend = row[0] is not None
                self._db.execute(
                    "UPDATE outbox SET sent_at = ?, due_at = ?, resends = resends + ?, strikes = strikes + ? "
                    "WHERE seq = ?",
                    (at, due_at, int(resend), int(resend and strike), seq),
                )
                if not resend:
                    tx.awaiting += 1
                tx.sent_ceiling = max(tx.sent_ceiling, at)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot mark a sent event in the spool {self.path}: {exc}") from exc

    def give_up(self, seq: int) -> bool:
        """Ack mode: delete a row the cloud never acked after the forwarder's last resend, counted as a
        drop of its stream like the full-spool policy's. False if the row was gone already (acked)."""
        try:
            with self._transaction() as tx:
                row = self._db.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING stream, LENGTH(payload), sent_at IS NOT NULL",
                    (seq,),
                ).fetchone()
                if row is None:
                    return False
                self._bump(f"dropped:{row[0]}", 1)
                tx.removed(row[1], row[2])
        except sqlite3.Error as exc:
            raise SpoolError(
                f"cannot give up an unacknowledged event in the spool {self.path}: {exc}"
            ) from exc
        return True

    def ack(self, event_ids: Sequence[str]) -> AckResult:
        """The cloud stored these events: delete their rows, sent or not (a late ack of a row queued for
        a resend saves the resend)."""
        wanted = list(dict.fromkeys(event_ids))
        if not wanted:
            return AckResult(deleted=0, unknown=0)
        marks = ",".join("?" * len(wanted))
        try:
            with self._transaction() as tx:
                rows = self._db.execute(
                    f"DELETE FROM outbox WHERE event_id IN ({marks}) "  # noqa: S608 - placeholders only
                    "RETURNING event_id, LENGTH(payload), sent_at IS NOT NULL",
                    wanted,
                ).fetchall()
                for _event_id, size, sent in rows:
                    tx.removed(size, sent)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot delete acknowledged events from the spool {self.path}: {exc}") from exc
        found = {str(r[0]) for r in rows}
        return AckResult(deleted=len(rows), unknown=len(wanted) - len(found))

    def dropped(self) -> dict[str, int]:
        """Events ever dropped by the full-spool policy, per stream (persisted across restarts)."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT name, value FROM counters WHERE name LIKE 'dropped:%'"
                ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the drop counters of the spool {self.path}: {exc}") from exc
        return {str(name).removeprefix("dropped:"): int(value) for name, value in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
