from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from lambdas.ingest.errors import BadEventError
from lambdas.ingest.events import (
    MAX_VALUE_CELLS,
    AnomalyEvent,
    Heartbeat,
    parse_message,
)
from tests.lambdas.ingest.helpers import THING, anomaly_payload, heartbeat_payload


def test_anomaly_event_is_parsed_into_typed_fields() -> None:
    event = parse_message(anomaly_payload())

    assert isinstance(event, AnomalyEvent)
    assert event.event_id == "3f2a9c1d7b8e4f60a1b2c3d4e5f60718"
    assert event.thing_name == THING
    assert event.timestamp == datetime(2013, 12, 11, 6, 0, tzinfo=UTC)
    assert event.start == datetime(2013, 12, 11, 5, 55, tzinfo=UTC)
    assert (event.score, event.peak_score, event.threshold) == (12.3, 12.3, 4.1)
    assert event.channels == ("value",)
    assert event.values == ((71.3,), (72.0,), (95.5,))
    assert event.suppressed == 2
    # The archived JSON is the device's message: the rule-added field is not part of it.
    raw = json.loads(event.raw_json)
    assert "thing_from_topic" not in raw
    assert raw == {k: v for k, v in anomaly_payload().items() if k != "thing_from_topic"}


def test_optional_fields_and_epoch_timestamps() -> None:
    payload = anomaly_payload(timestamp=1386741600.5, score=7, end=None)
    del payload["start"], payload["peak_score"]

    event = parse_message(payload)

    assert isinstance(event, AnomalyEvent)
    assert event.timestamp == datetime(2013, 12, 11, 6, 0, 0, 500000, tzinfo=UTC)
    assert event.start is None
    assert event.end is None
    assert event.peak_score == 7.0  # defaults to the score


def test_offset_timestamps_are_normalised_to_utc() -> None:
    event = parse_message(anomaly_payload(timestamp="2013-12-11T07:00:00+01:00"))
    assert isinstance(event, AnomalyEvent)
    assert event.timestamp == datetime(2013, 12, 11, 6, 0, tzinfo=UTC)


def test_heartbeat_is_parsed_with_numeric_counters() -> None:
    heartbeat = parse_message(heartbeat_payload())

    assert isinstance(heartbeat, Heartbeat)
    assert heartbeat.thing_name == THING
    assert heartbeat.timestamp == datetime(2023, 11, 14, 22, 13, tzinfo=UTC)
    assert heartbeat.model_version == "20261124T201500Z-3f2a9c1d"
    # Null (samples_per_s) and non-numeric fields stay in the raw JSON only.
    assert heartbeat.counters == {
        "samples_in": 6000,
        "windows_scored": 5969,
        "anomalies_forwarded": 3,
        "publish_failures": 0,
        "elapsed_s": 60.0,
    }
    assert heartbeat.rejects == {"non_finite": 2}


def _without(field: str) -> dict[str, object]:
    payload = anomaly_payload()
    del payload[field]
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param([1, 2], "message must be a JSON object, got list", id="not-an-object"),
        pytest.param({"thing_name": THING}, "message has no 'schema' field", id="no-schema"),
        pytest.param(
            anomaly_payload(schema="edgeml.anomaly/2"), "unsupported schema 'edgeml.anomaly/2'", id="schema"
        ),
        pytest.param(_without("event_id"), "missing required field 'event_id'", id="missing-event-id"),
        pytest.param(
            anomaly_payload(event_id="../../etc"),
            "field 'event_id'='../../etc' does not match",
            id="event-id",
        ),
        pytest.param(_without("stream"), "missing required field 'stream'", id="missing-stream"),
        pytest.param(anomaly_payload(stream=""), "field 'stream' must be 1-128 printable", id="empty-stream"),
        pytest.param(_without("threshold"), "missing required field 'threshold'", id="missing-threshold"),
        pytest.param(
            anomaly_payload(score="12.3"), "field 'score' must be a number, got string", id="score-str"
        ),
        pytest.param(
            anomaly_payload(score=True), "field 'score' must be a number, got boolean", id="score-bool"
        ),
        pytest.param(
            anomaly_payload(score=math.nan), "field 'score' must be finite, got nan", id="score-nan"
        ),
        pytest.param(
            anomaly_payload(peak_score=math.inf), "field 'peak_score' must be finite", id="peak-inf"
        ),
        pytest.param(
            anomaly_payload(threshold=None), "field 'threshold' must be a number, got null", id="thr-null"
        ),
        pytest.param(
            {k: v for k, v in anomaly_payload().items() if k not in {"score", "peak_score"}},
            "needs 'score' or 'peak_score'",
            id="no-score",
        ),
        pytest.param(anomaly_payload(timestamp="yesterday"), "'yesterday' is not an ISO-8601", id="ts-text"),
        pytest.param(anomaly_payload(timestamp="2013-12-11T06:00:00"), "has no UTC offset", id="ts-naive"),
        pytest.param(anomaly_payload(timestamp=1e300), "is not a valid epoch time", id="ts-overflow"),
        pytest.param(
            anomaly_payload(end=[1]), "field 'end' must be an ISO-8601 string or epoch", id="end-list"
        ),
        pytest.param(
            anomaly_payload(model_version=3), "field 'model_version' must be a string", id="model-int"
        ),
        pytest.param(
            anomaly_payload(channels=[]), "field 'channels' must be a non-empty list", id="no-channels"
        ),
        pytest.param(anomaly_payload(channels=["a", 1]), "must hold non-empty strings", id="channel-int"),
        pytest.param(anomaly_payload(values=[]), "field 'values' must be a non-empty list", id="no-values"),
        pytest.param(
            anomaly_payload(values=[[1.0], [2.0, 3.0]]),
            "values[1] must be a list of 1 numbers (one per channel), got list of length 2",
            id="ragged-row",
        ),
        pytest.param(anomaly_payload(values=[[1.0], ["x"]]), "values[1] holds a string", id="value-str"),
        pytest.param(
            anomaly_payload(values=[[math.nan]]), "values[0] holds a non-finite number nan", id="value-nan"
        ),
        pytest.param(
            anomaly_payload(values=[[0.0]] * (MAX_VALUE_CELLS + 1)),
            f"field 'values' is too large: {MAX_VALUE_CELLS + 1} rows x 1 channels",
            id="values-oversized",
        ),
        pytest.param(
            anomaly_payload(suppressed=-1), "field 'suppressed' must be >= 0, got -1", id="suppr-neg"
        ),
        pytest.param(
            anomaly_payload(suppressed=1.5), "field 'suppressed' must be an integer", id="suppr-float"
        ),
        pytest.param(
            anomaly_payload(note="x" * 200_000),
            "message is 200398 bytes; the limit is 131072",
            id="message-oversized",
        ),
        pytest.param(
            anomaly_payload(extra=math.nan), "message holds a NaN or infinite number", id="extra-nan"
        ),
        pytest.param(
            anomaly_payload(thing_name="gw#01"), "field 'thing_name'='gw#01' does not match", id="thing"
        ),
        pytest.param(
            {k: v for k, v in anomaly_payload().items() if k != "thing_from_topic"},
            "missing 'thing_from_topic': the IoT rule must add topic(2)",
            id="no-topic-thing",
        ),
    ],
)
def test_malformed_anomaly_events_are_refused(payload: object, message: str) -> None:
    with pytest.raises(BadEventError) as raised:
        parse_message(payload)
    assert message in str(raised.value)


def test_event_naming_another_device_is_refused() -> None:
    # Published on edge/sensor-gw-02/anomalies, claiming to be sensor-gw-01.
    payload = anomaly_payload(thing_from_topic="sensor-gw-02")

    with pytest.raises(BadEventError) as raised:
        parse_message(payload)

    assert str(raised.value) == (
        "anomaly event 3f2a9c1d7b8e4f60a1b2c3d4e5f60718: thing_name 'sensor-gw-01' does not match the "
        "publishing device 'sensor-gw-02' (a device may only report as itself)"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(
            heartbeat_payload(thing_from_topic="other"), "does not match the publishing device 'other'"
        ),
        pytest.param(
            heartbeat_payload(timestamp=None), "field 'timestamp' must be an ISO-8601 string or epoch"
        ),
        pytest.param(heartbeat_payload(samples_in=math.inf), "field 'samples_in' must be finite, got inf"),
        pytest.param(heartbeat_payload(rejects=["x"]), "field 'rejects' must be an object, got list"),
        pytest.param(heartbeat_payload(rejects={"x": -1}), "must map kinds to counts >= 0, got 'x': -1"),
        pytest.param(heartbeat_payload(padding="x" * 40_000), "the limit is 32768"),
    ],
)
def test_malformed_heartbeats_are_refused(payload: dict[str, object], message: str) -> None:
    with pytest.raises(BadEventError) as raised:
        parse_message(payload)
    assert str(raised.value).startswith("heartbeat")
    assert message in str(raised.value)
