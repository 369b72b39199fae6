from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambdas.ingest.core import AlertPolicy, ingest_anomaly, ingest_heartbeat
from lambdas.ingest.events import AnomalyEvent, Heartbeat, parse_message
from lambdas.ingest.queries import EventQueries
from tests.lambdas.ingest.conftest import Aws
from tests.lambdas.ingest.helpers import TABLE, THING, Clock, anomaly_payload, heartbeat_payload


def _store(aws: Aws, **overrides: object) -> None:
    event = parse_message(anomaly_payload(**overrides))
    assert isinstance(event, AnomalyEvent)
    ingest_anomaly(
        event,
        store=aws.store(),
        archive=aws.archive(),
        alerts=aws.alerts(),
        clock=Clock(),
        policy=AlertPolicy(limit=100, window_s=60),
    )


@pytest.fixture
def populated(aws: Aws) -> Aws:
    # Inserted out of order; "06:00:00Z" and "06:00:00.5Z" would sort wrongly as raw text.
    for event_id, timestamp, stream in [
        ("c" * 32, "2013-12-11T06:00:00.5Z", "pressure"),
        ("a" * 32, "2013-12-11T05:00:00Z", "temperature"),
        ("d" * 32, "2013-12-11T07:00:00Z", "temperature"),
        ("b" * 32, "2013-12-11T06:00:00Z", "temperature"),
        ("e" * 32, "2013-12-12T00:00:00Z", "temperature"),
    ]:
        _store(aws, event_id=event_id, timestamp=timestamp, stream=stream)
    _store(aws, event_id="f" * 32, thing_name="sensor-gw-02", thing_from_topic="sensor-gw-02")
    heartbeat = parse_message(heartbeat_payload(timestamp="2013-12-11T06:30:00Z"))
    assert isinstance(heartbeat, Heartbeat)
    ingest_heartbeat(heartbeat, store=aws.store(), clock=Clock(), ttl_days=1)
    return aws


def test_events_for_device_returns_the_range_in_time_order(populated: Aws) -> None:
    queries = EventQueries(TABLE, client=populated.dynamodb)

    events = queries.events_for_device(
        THING, datetime(2013, 12, 11, 6, 0, tzinfo=UTC), datetime(2013, 12, 11, 7, 0, tzinfo=UTC)
    )

    # Both bounds are inclusive; the other device, the heartbeat and the alert counter are not events.
    assert [e.event_id for e in events] == ["b" * 32, "c" * 32, "d" * 32]
    assert [e.timestamp for e in events] == [
        "2013-12-11T06:00:00.000000Z",
        "2013-12-11T06:00:00.500000Z",
        "2013-12-11T07:00:00.000000Z",
    ]
    first = events[0]
    assert first.thing_name == THING
    assert first.values == ((71.3,), (72.0,), (95.5,))
    assert first.channels == ("value",)
    assert (first.score, first.threshold, first.suppressed) == (12.3, 4.1, 2)
    assert first.start == "2013-12-11T05:55:00.000000Z"


def test_events_for_stream_uses_the_stream_index(populated: Aws) -> None:
    queries = EventQueries(TABLE, client=populated.dynamodb)

    events = queries.events_for_stream(
        THING, "temperature", datetime(2013, 12, 11, tzinfo=UTC), datetime(2013, 12, 12, tzinfo=UTC)
    )

    assert [e.event_id for e in events] == ["a" * 32, "b" * 32, "d" * 32, "e" * 32]


def test_empty_range_and_naive_datetimes(populated: Aws) -> None:
    queries = EventQueries(TABLE, client=populated.dynamodb)
    assert (
        queries.events_for_device(THING, datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
        == []
    )
    with pytest.raises(ValueError, match="start and end must be timezone-aware datetimes"):
        queries.events_for_device(THING, datetime(2013, 12, 11), datetime(2013, 12, 12, tzinfo=UTC))
