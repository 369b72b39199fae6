"""The durable spool on its own: ordering, persistence across reopen, and the full-spool policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from greengrass_components.anomaly_detector.errors import SpoolError
from greengrass_components.anomaly_detector.spool import Spool, SpoolItem


def put(spool: Spool, n: int, stream: str = "s", size: int = 10) -> None:
    spool.put(event_id=f"e{n}", stream=stream, topic="t", payload=bytes([n % 256]) * size, created_at=0.0)


def test_events_come_back_in_insertion_order_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    for n in range(5):
        put(spool, n)
    spool.delete(spool.peek(1)[0].seq)
    spool.close()  # as good as a crash for sqlite: every put was its own committed transaction

    reopened = Spool(path)
    assert [e.event_id for e in reopened.peek()] == ["e1", "e2", "e3", "e4"]
    assert reopened.depth == 4
    assert reopened.bytes_used == 40


def test_drop_oldest_makes_room_and_counts_per_stream(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=30, policy="drop_oldest")
    put(spool, 1, stream="a")
    put(spool, 2, stream="b")
    put(spool, 3, stream="a")
    result = spool.put(event_id="e4", stream="c", topic="t", payload=b"x" * 10, created_at=0.0)
    assert result.stored
    assert result.dropped == 1
    assert [e.event_id for e in spool.peek()] == ["e2", "e3", "e4"]
    assert spool.dropped() == {"a": 1}
    assert spool.bytes_used == 30


def test_drop_newest_refuses_the_new_event_and_remembers_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path, max_bytes=20, policy="drop_newest")
    put(spool, 1)
    put(spool, 2)
    result = spool.put(event_id="e3", stream="s", topic="t", payload=b"x" * 10, created_at=0.0)
    assert not result.stored
    assert [e.event_id for e in spool.peek()] == ["e1", "e2"]
    spool.close()
    assert Spool(path, max_bytes=20).dropped() == {"s": 1}  # never silent, even across restarts


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes must be >= 1, got 0"):
        Spool(":memory:", max_bytes=0)
    with pytest.raises(ValueError, match="policy must be one of"):
        Spool(":memory:", policy="keep_all")  # type: ignore[arg-type]


def test_put_many_commits_a_batch_in_one_transaction_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path, max_bytes=25)
    items = [SpoolItem(f"b{n}", "s", "t", bytes([n]) * 10, 0.0) for n in range(3)]
    results = spool.put_many(items)
    # The third does not fit: drop_oldest evicts the first, inside the same transaction.
    assert [r.stored for r in results] == [True, True, True]
    assert [r.dropped for r in results] == [0, 0, 1]
    assert spool.put_many([]) == []
    spool.close()  # committed when put_many returned: a reopen (as after kill -9) sees the batch
    reopened = Spool(path, max_bytes=25)
    assert [e.event_id for e in reopened.peek()] == ["b1", "b2"]
    assert reopened.dropped() == {"s": 1}


def test_put_many_rolls_back_the_whole_batch_on_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    put(spool, 1)
    spool._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.event_id = 'bad' "
                      "BEGIN SELECT RAISE(ABORT, 'refused'); END")  # fmt: skip
    with pytest.raises(SpoolError, match=r"cannot write to spool .*refused"):
        spool.put_many([SpoolItem("ok", "s", "t", b"x", 0.0), SpoolItem("bad", "s", "t", b"x", 0.0)])
    assert [e.event_id for e in spool.peek()] == ["e1"]  # "ok" was rolled back with "bad"
