"""The spool in ack mode (docs/contracts.md §6c): a sent row is kept, stamped ``sent_at``, until the cloud
acks its event id; a row whose ack is overdue is due again in seq order; all of it survives a reopen, and
a spool file written before the ack mode is migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from greengrass_components.anomaly_detector.errors import SpoolError
from greengrass_components.anomaly_detector.spool import AckResult, Spool

TIMEOUT = 30.0
NOW = 1_800_000_000.0


def put(spool: Spool, n: int, size: int = 10) -> int:
    spool.put(event_id=f"e{n}", stream="s", topic="t", payload=bytes([n]) * size, created_at=0.0)
    return spool.peek(1000)[-1].seq


def due(spool: Spool, now: float) -> list[str]:
    return [e.event_id for e in spool.peek_due(100, now=now, ack_timeout_s=TIMEOUT)]


def test_a_sent_row_is_kept_and_still_counted_until_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    seqs = [put(spool, n) for n in range(3)]
    spool.mark_sent(seqs[0], at=NOW)
    spool.mark_sent(seqs[1], at=NOW)

    # Not safe yet: the rows count in depth and bytes, and only the unsent one is due.
    assert (spool.depth, spool.bytes_used, spool.awaiting_ack) == (3, 30, 2)
    assert due(spool, NOW + 1) == ["e2"]
    assert spool.due_count(now=NOW + 1, ack_timeout_s=TIMEOUT) == 1

    assert spool.ack(["e0"]) == AckResult(deleted=1, unknown=0)
    assert (spool.depth, spool.bytes_used, spool.awaiting_ack) == (2, 20, 1)
    assert [e.event_id for e in spool.peek()] == ["e1", "e2"]


def test_an_overdue_row_is_due_again_after_the_unsent_rows(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    seqs = [put(spool, n) for n in range(4)]
    spool.mark_sent(seqs[0], at=NOW)
    spool.mark_sent(seqs[2], at=NOW + 10)

    assert due(spool, NOW + TIMEOUT - 1) == ["e1", "e3"]
    # e0's timeout has passed (e2's not yet): it goes again, after the rows never sent.
    assert due(spool, NOW + TIMEOUT) == ["e1", "e3", "e0"]
    overdue = spool.peek_due(3, now=NOW + TIMEOUT, ack_timeout_s=TIMEOUT)[2]
    assert overdue.sent_at == NOW  # the forwarder tells a resend from a first send by this
    assert spool.peek_due(1, now=NOW + TIMEOUT, ack_timeout_s=TIMEOUT)[0].sent_at is None
    assert due(spool, NOW + 10 + TIMEOUT) == ["e1", "e3", "e0", "e2"]

    # Sent again: stamped anew and awaiting as before (not counted twice), one resend more.
    spool.mark_sent(seqs[0], at=NOW + TIMEOUT)
    assert spool.awaiting_ack == 2
    assert due(spool, NOW + TIMEOUT + 1) == ["e1", "e3"]
    assert spool.peek()[0].resends == 1


def test_a_wall_clock_gone_back_makes_a_row_due_instead_of_stuck(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.mark_sent(put(spool, 0), at=NOW)
    # A device without a real-time clock restarting at its build date: sent_at is years "in the future".
    assert due(spool, NOW - 365 * 86400) == ["e0"]
    assert due(spool, NOW - 1) == []  # within the timeout either way: still awaiting its ack


def test_acks_count_unknown_ids_and_delete_unsent_rows_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    seqs = [put(spool, n) for n in range(3)]
    spool.mark_sent(seqs[0], at=NOW)

    # e1 was never marked sent (say, queued for a resend): the cloud has it, so the resend is saved.
    result = spool.ack(["e0", "e1", "e1", "nope", "e0"])
    assert result == AckResult(deleted=2, unknown=1)  # duplicates within one ack count once
    assert (spool.depth, spool.bytes_used, spool.awaiting_ack) == (1, 10, 0)
    assert spool.ack(["e0"]) == AckResult(deleted=0, unknown=1)  # the second ack of a duplicate
    assert spool.ack([]) == AckResult(deleted=0, unknown=0)
    assert [e.event_id for e in spool.peek()] == ["e2"]


def test_an_ack_faster_than_mark_sent_leaves_the_row_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    seq = put(spool, 0)
    spool.ack(["e0"])  # the cloud answered before the publish call returned
    spool.mark_sent(seq, at=NOW)
    assert (spool.depth, spool.awaiting_ack) == (0, 0)
    assert spool.peek() == []


def test_awaiting_rows_survive_a_restart_and_are_due_once_their_timeout_passed(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    seqs = [put(spool, n) for n in range(3)]
    spool.mark_sent(seqs[0], at=NOW)
    spool.mark_sent(seqs[1], at=NOW + 5)
    spool.close()  # as good as a kill -9: every call was its own committed transaction

    reopened = Spool(path)
    assert (reopened.depth, reopened.bytes_used, reopened.awaiting_ack) == (3, 30, 2)
    assert due(reopened, NOW + 1) == ["e2"]
    assert due(reopened, NOW + TIMEOUT) == ["e2", "e0"]
    assert due(reopened, NOW + 5 + TIMEOUT) == ["e2", "e0", "e1"]


def test_rows_awaiting_an_ack_count_in_the_full_spool_policy(tmp_path: Path) -> None:
    oldest = Spool(tmp_path / "oldest.db", max_bytes=30, policy="drop_oldest")
    for n in range(3):
        oldest.mark_sent(put(oldest, n), at=NOW)
    put(oldest, 3)  # evicts e0, which was sent but not acked: the drop is counted like any other
    assert [e.event_id for e in oldest.peek()] == ["e1", "e2", "e3"]
    assert (oldest.depth, oldest.bytes_used, oldest.awaiting_ack) == (3, 30, 2)
    assert oldest.dropped() == {"s": 1}

    newest = Spool(tmp_path / "newest.db", max_bytes=20, policy="drop_newest")
    for n in range(2):
        newest.mark_sent(put(newest, n), at=NOW)
    refused = newest.put(event_id="e2", stream="s", topic="t", payload=b"x" * 10, created_at=0.0)
    assert not refused.stored
    assert newest.awaiting_ack == 2


def test_deleting_an_awaiting_row_keeps_the_counter_right(tmp_path: Path) -> None:
    # Ack mode turned off with rows still awaiting: the forwarder sends and deletes them like any row.
    spool = Spool(tmp_path / "spool.db")
    seq = put(spool, 0)
    spool.mark_sent(seq, at=NOW)
    spool.delete(seq)
    assert (spool.depth, spool.awaiting_ack) == (0, 0)


OLD_SCHEMA = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE open_events (
    stream TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    updated_at REAL NOT NULL
);
"""


def test_a_spool_file_from_before_the_ack_mode_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.executemany(
        "INSERT INTO outbox(event_id, stream, topic, payload, created_at) VALUES (?, 's', 't', ?, 0)",
        [("old1", b"x" * 10), ("old2", b"y" * 10)],
    )
    old.commit()
    old.close()

    spool = Spool(path)
    assert (spool.depth, spool.bytes_used, spool.awaiting_ack) == (2, 20, 0)
    assert due(spool, NOW) == ["old1", "old2"]  # rows of the old component are unsent
    spool.mark_sent(spool.peek(1)[0].seq, at=NOW)
    assert spool.ack(["old1"]) == AckResult(deleted=1, unknown=0)
    spool.close()

    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(outbox)")]
    assert columns[-4:] == ["sent_at", "due_at", "resends", "strikes"]
    assert Spool(path).peek()[0].event_id == "old2"  # a second open finds the column and changes nothing


def test_ack_errors_are_spool_errors(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    put(spool, 0)
    spool.close()
    with pytest.raises(SpoolError, match="cannot delete acknowledged events from the spool"):
        spool.ack(["e0"])
    with pytest.raises(SpoolError, match="cannot mark a sent event in the spool"):
        spool.mark_sent(1, at=NOW)
