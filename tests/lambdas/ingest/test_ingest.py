"""ingest_anomaly / ingest_heartbeat against moto: what lands in DynamoDB, S3 and SNS."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdas.ingest.core import AlertOutcome, AlertPolicy, IngestResult, ingest_anomaly, ingest_heartbeat
from lambdas.ingest.errors import IngestRetryableError
from lambdas.ingest.events import AnomalyEvent, Heartbeat, parse_message
from tests.lambdas.ingest.conftest import Aws
from tests.lambdas.ingest.helpers import BUCKET, NOW, THING, Clock, anomaly_payload, heartbeat_payload

EVENT_ID = "3f2a9c1d7b8e4f60a1b2c3d4e5f60718"


def _event(**overrides: Any) -> AnomalyEvent:
    event = parse_message(anomaly_payload(**overrides))
    assert isinstance(event, AnomalyEvent)
    return event


def _ingest(aws: Aws, event: AnomalyEvent, clock: Clock | None = None, **kwargs: Any) -> IngestResult:
    return ingest_anomaly(
        event,
        store=kwargs.get("store", aws.store()),
        archive=kwargs.get("archive", aws.archive()),
        alerts=aws.alerts(),
        clock=clock or Clock(),
        policy=kwargs.get("policy", aws.config.alert_policy),
    )


def test_new_event_is_stored_archived_and_alerted(aws: Aws) -> None:
    result = _ingest(aws, _event())

    key = f"anomalies/2013/12/11/{THING}/{EVENT_ID}.json"
    assert result == IngestResult(
        event_id=EVENT_ID,
        thing_name=THING,
        duplicate=False,
        archive_key=key,
        archived=True,
        alert=AlertOutcome.SENT,
        alerts_suppressed_reported=0,
        alert_message_id=result.alert_message_id,
    )
    assert result.alert_message_id

    [item] = aws.items_of_kind("anomaly")
    assert item["pk"] == {"S": f"DEVICE#{THING}"}
    assert item["sk"] == {"S": f"TS#2013-12-11T06:00:00.000000Z#{EVENT_ID}"}
    assert item["stream_pk"] == {"S": f"STREAM#{THING}#machine_temperature"}
    assert item["stream_sk"] == item["sk"]
    assert item["score"] == {"N": "12.3"}
    assert item["threshold"] == {"N": "4.1"}
    assert item["start"] == {"S": "2013-12-11T05:55:00.000000Z"}
    assert json.loads(item["values_json"]["S"]) == [[71.3], [72.0], [95.5]]
    assert item["received_at"] == {"N": repr(NOW)}

    [marker] = aws.items_of_kind("event-marker")
    assert marker["pk"] == {"S": f"EVENT#{EVENT_ID}"}
    assert marker["archived"] == {"BOOL": True}
    assert marker["alert_outcome"] == {"S": "sent"}

    assert aws.archive_keys() == [key]
    archived = aws.s3.get_object(Bucket=BUCKET, Key=key)
    assert archived["ContentType"] == "application/json"
    assert json.loads(archived["Body"].read()) == {
        k: v for k, v in anomaly_payload().items() if k != "thing_from_topic"
    }

    [alert] = aws.received_alerts()
    assert alert["subject"] == f"Anomaly on {THING}/machine_temperature: score 12.3 > 4.1"
    assert alert["message"] == {
        "thing_name": THING,
        "stream": "machine_temperature",
        "event_id": EVENT_ID,
        "timestamp": "2013-12-11T06:00:00.000000Z",
        "score": 12.3,
        "peak_score": 12.3,
        "threshold": 4.1,
        "model_version": "20261124T201500Z-3f2a9c1d",
        "device_suppressed": 2,
        "alerts_suppressed": 0,
        "archive_key": key,
    }


def test_redelivered_event_is_a_no_op(aws: Aws) -> None:
    _ingest(aws, _event())
    items_after_first = aws.items()
    aws.received_alerts()  # drain

    # At-least-once delivery: the same event again, even with its timestamp written differently.
    again = _ingest(aws, _event(timestamp="2013-12-11T07:00:00+01:00"))

    assert again.duplicate is True
    assert again.archived is False
    assert again.alert is AlertOutcome.ALREADY_HANDLED
    assert again.alert_message_id is None
    assert sorted(map(str, aws.items())) == sorted(map(str, items_after_first))
    assert len(aws.items_of_kind("anomaly")) == 1
    assert aws.archive_keys() == [f"anomalies/2013/12/11/{THING}/{EVENT_ID}.json"]
    assert aws.received_alerts() == []


class FailingOnceArchive:
    """Stands for a crash or an S3 outage between storing and archiving."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0

    def put(self, key: str, body: bytes) -> bool:
        self.calls += 1
        if self.calls == 1:
            raise IngestRetryableError("archiving the event failed with SlowDown; retry the invocation")
        result: bool = self._inner.put(key, body)
        return result


def test_retry_after_a_failed_archive_resumes_the_unfinished_steps(aws: Aws) -> None:
    archive = FailingOnceArchive(aws.archive())
    with pytest.raises(IngestRetryableError, match="SlowDown"):
        _ingest(aws, _event(), archive=archive)
    assert len(aws.items_of_kind("anomaly")) == 1
    assert aws.archive_keys() == []
    assert aws.received_alerts() == []

    retried = _ingest(aws, _event(), archive=archive)

    # The event was already stored, yet the archive and the alert are not lost.
    assert retried.duplicate is True
    assert retried.archived is True
    assert retried.alert is AlertOutcome.SENT
    assert aws.archive_keys() == [f"anomalies/2013/12/11/{THING}/{EVENT_ID}.json"]
    assert len(aws.received_alerts()) == 1
    assert len(aws.items_of_kind("anomaly")) == 1


def test_alerts_are_rate_limited_per_device_and_suppressed_alerts_are_reported(aws: Aws) -> None:
    policy = AlertPolicy(limit=3, window_s=600)
    clock = Clock(NOW - NOW % 600)  # the start of a window
    outcomes = []
    for n in range(5):
        clock.now += 10
        outcomes.append(_ingest(aws, _event(event_id=f"{n:032x}"), clock, policy=policy).alert)

    assert outcomes == [AlertOutcome.SENT] * 3 + [AlertOutcome.RATE_LIMITED] * 2
    assert len(aws.received_alerts()) == 3
    # Rate limiting only holds back alerts: every event is stored and archived.
    assert len(aws.items_of_kind("anomaly")) == 5
    assert len(aws.archive_keys()) == 5

    # Another device has its own budget.
    other = _ingest(
        aws, _event(event_id="f" * 32, thing_name="sensor-gw-02", thing_from_topic="sensor-gw-02"), clock
    )
    assert other.alert is AlertOutcome.SENT
    assert other.alerts_suppressed_reported == 0
    aws.received_alerts()

    clock.now += 600  # next window
    nxt = _ingest(aws, _event(event_id="a" * 32), clock, policy=policy)
    assert nxt.alert is AlertOutcome.SENT
    assert nxt.alerts_suppressed_reported == 2
    [alert] = aws.received_alerts()
    assert alert["message"]["alerts_suppressed"] == 2
    assert alert["message"]["event_id"] == "a" * 32

    # The count was reported once: the next alert carries nothing.
    clock.now += 1
    assert _ingest(aws, _event(event_id="b" * 32), clock, policy=policy).alerts_suppressed_reported == 0


def test_alert_counter_item_expires(aws: Aws) -> None:
    policy = AlertPolicy(limit=1, window_s=600, counter_retention_s=3600)
    clock = Clock(NOW)
    _ingest(aws, _event(), clock, policy=policy)

    [counter] = [item for item in aws.items() if item["sk"] == {"S": "ALERTS"}]
    window_start = int(NOW // 600) * 600
    assert counter["window_start"] == {"N": str(window_start)}
    assert counter["sent"] == {"N": "1"}
    assert counter["expires_at"] == {"N": str(window_start + 600 + 3600)}


def test_heartbeat_is_stored_with_a_ttl(aws: Aws) -> None:
    heartbeat = parse_message(heartbeat_payload())
    assert isinstance(heartbeat, Heartbeat)

    result = ingest_heartbeat(heartbeat, store=aws.store(), clock=Clock(), ttl_days=7)

    expires_at = int(NOW) + 7 * 86_400
    assert result.expires_at == expires_at
    assert result.timestamp == "2023-11-14T22:13:00.000000Z"
    [item] = aws.items()
    assert item["pk"] == {"S": f"DEVICE#{THING}"}
    assert item["sk"] == {"S": "HB#2023-11-14T22:13:00.000000Z"}
    assert item["kind"] == {"S": "heartbeat"}
    assert item["expires_at"] == {"N": str(expires_at)}
    assert item["model_version"] == {"S": "20261124T201500Z-3f2a9c1d"}
    assert item["counters"]["M"]["samples_in"] == {"N": "6000"}
    assert item["rejects"]["M"] == {"non_finite": {"N": "2"}}
    assert json.loads(item["body"]["S"])["windows_scored"] == 5969
    ttl = aws.dynamodb.describe_time_to_live(TableName="edgeml-events")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


def test_archive_written_before_a_crash_is_not_overwritten(aws: Aws) -> None:
    # A crash after the S3 write but before the marker update: the retry finds the object in place.
    key = f"anomalies/2013/12/11/{THING}/{EVENT_ID}.json"
    assert aws.archive().put(key, b'{"first":"attempt"}') is True

    result = _ingest(aws, _event())

    assert result.archived is False
    assert result.alert is AlertOutcome.SENT
    assert aws.archive_keys() == [key]
    assert aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b'{"first":"attempt"}'
    [marker] = aws.items_of_kind("event-marker")
    assert marker["archived"] == {"BOOL": True}
