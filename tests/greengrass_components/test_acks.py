"""Acks from the cloud (docs/contracts.md §6c): the message contract, and a handler that deletes the acked
rows, counts what it received and refused, logs refusals rate-limited, and never raises (it runs in a
transport callback: an exception there would kill the subscription)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greengrass_components.anomaly_detector.acks import (
    ACK_SCHEMA,
    MAX_ACK_IDS,
    AckCounts,
    AckHandler,
    parse_ack,
)
from greengrass_components.anomaly_detector.errors import AckError
from greengrass_components.anomaly_detector.spool import Spool

from .test_spool_write_failures import captured_logs


def ack(*event_ids: object, schema: object = ACK_SCHEMA) -> bytes:
    return json.dumps({"schema": schema, "event_ids": list(event_ids)}).encode()


def test_a_contract_ack_gives_its_event_ids() -> None:
    assert parse_ack(ack("a" * 32, "b" * 32)) == ("a" * 32, "b" * 32)
    assert parse_ack(ack("x").decode()) == ("x",)  # an IPC payload may come as str
    assert len(parse_ack(ack(*[f"id{i}" for i in range(MAX_ACK_IDS)]))) == MAX_ACK_IDS


@pytest.mark.parametrize(
    ("payload", "kind", "message"),
    [
        (b"\xff not json", "not_json", "ack is not JSON"),
        (b"[1, 2]", "bad_shape", "ack must be a JSON object, got list"),
        (ack("a", schema="edgeml.ack/2"), "bad_schema", "must be 'edgeml.ack/1', got 'edgeml.ack/2'"),
        (b'{"event_ids": ["a"]}', "bad_schema", "got None"),
        (ack(), "bad_ids", r"list of 1\.\.100 ids, got 0"),
        (ack(*[f"id{i}" for i in range(MAX_ACK_IDS + 1)]), "bad_ids", "got 101"),
        (b'{"schema": "edgeml.ack/1", "event_ids": "abc"}', "bad_ids", "got str"),
        (ack("a", 7), "bad_ids", "non-empty strings of at most 128 characters, got 7"),
        (ack(""), "bad_ids", "got ''"),
        (ack("x" * 129), "bad_ids", "at most 128 characters"),
    ],
)
def test_a_malformed_ack_is_refused_with_its_kind(payload: bytes, kind: str, message: str) -> None:
    with pytest.raises(AckError, match=message) as caught:
        parse_ack(payload)
    assert caught.value.kind == kind


def spool_with(tmp_path: Path, *event_ids: str) -> Spool:
    spool = Spool(tmp_path / "spool.db")
    for event_id in event_ids:
        spool.put(event_id=event_id, stream="s", topic="t", payload=b"x", created_at=0.0)
    return spool


def test_the_handler_deletes_acked_rows_and_counts(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, "e1", "e2", "e3")
    handler = AckHandler(spool)
    handler.handle(ack("e1", "e3", "gone"))
    handler.handle(ack("e1"))  # the ack of a duplicate: its row is already gone
    handler.handle(b"garbage")
    assert [e.event_id for e in spool.peek()] == ["e2"]
    assert handler.counts() == AckCounts(received=2, unknown_ids=2, malformed=1)


def test_malformed_acks_are_logged_rate_limited_and_never_raise(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, "e1")
    now = [0.0]
    handler = AckHandler(spool, clock=lambda: now[0])
    with captured_logs() as records:
        for _ in range(50):
            handler.handle(b"not json")
        handler.handle(None)  # an IPC message without a payload
        handler.handle(ack("e1", schema="other"))
        now[0] = 61.0
        handler.handle(b"not json")
    refused = [r for r in records if r.getMessage() == "ack refused"]
    # One line per kind, then one a minute carrying how many were not logged in between.
    assert [(r.kind, r.not_logged_since_last) for r in refused] == [  # type: ignore[attr-defined]
        ("not_json", 0),
        ("bad_schema", 0),
        ("not_json", 50),
    ]
    assert handler.counts() == AckCounts(received=0, unknown_ids=0, malformed=53)
    assert spool.depth == 1  # nothing deleted by a refused ack


def test_a_spool_failure_is_logged_not_raised(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, "e1")
    handler = AckHandler(spool)
    spool.close()
    with captured_logs() as records:
        handler.handle(ack("e1"))  # must not raise: it would end the transport's subscription
    (record,) = records
    assert record.getMessage() == "ack not applied: spool write failed"
    assert "cannot delete acknowledged events" in record.error  # type: ignore[attr-defined]
    assert handler.counts() == AckCounts()
