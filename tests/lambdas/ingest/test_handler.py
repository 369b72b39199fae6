"""The Lambda entry point end to end: IoT-rule-shaped events in, DynamoDB / S3 / SNS effects out."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from lambdas.ingest import handler as handler_module
from lambdas.ingest.acks import AckMessage
from lambdas.ingest.adapters import ACK_PUBLISH_FAILURES_METRIC, DynamoEventStore, EmfAckMetrics, S3Archive
from lambdas.ingest.errors import AckPublishError, BadEventError, IngestRetryableError
from lambdas.ingest.handler import Dependencies, handle, handler
from tests.lambdas.ingest.conftest import Aws
from tests.lambdas.ingest.helpers import REGION, THING, Clock, anomaly_payload, heartbeat_payload


@dataclass
class FakeLambdaContext:
    function_name: str = "edgeml-ingest"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:edgeml-ingest"
    aws_request_id: str = "req-1"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The powertools handler's output, redirected (it keeps the stdout it saw at import)."""
    handler_ = handler_module.logger.registered_handler
    assert isinstance(handler_, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler_.setStream(stream)
    yield stream
    handler_.setStream(previous)


@pytest.fixture
def lambda_env(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("EVENTS_TABLE", aws.config.events_table)
    monkeypatch.setenv("ARCHIVE_BUCKET", aws.config.archive_bucket)
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("HEARTBEAT_TTL_DAYS", "7")
    # moto's IoT data plane, as the local stand-ins set it (moto does not serve the address it describes).
    monkeypatch.setenv("IOT_DATA_ENDPOINT", f"https://data-ats.iot.{REGION}.amazonaws.com")
    handler_module._dependencies.cache_clear()
    yield aws
    handler_module._dependencies.cache_clear()


def _deps(aws: Aws, store: Any = None, **extra: Any) -> Dependencies:
    return Dependencies(
        config=aws.config,
        store=store or aws.store(),
        archive=aws.archive(),
        alerts=aws.alerts(),
        clock=Clock(),
        **extra,
    )


EVENT_ID = "3f2a9c1d7b8e4f60a1b2c3d4e5f60718"


class RecordingPublisher:
    """Records each ack with what the cloud held when it was published; or fails every publish."""

    def __init__(self, aws: Aws, *, fail: bool = False) -> None:
        self.aws = aws
        self.fail = fail
        self.acks: list[tuple[AckMessage, dict[str, int]]] = []

    def publish(self, message: AckMessage) -> None:
        if self.fail:
            raise AckPublishError(f"ack to {message.topic} not published: ThrottlingException: Rate exceeded")
        held = {
            "events": len(self.aws.items_of_kind("anomaly")),
            "archived": len(self.aws.archive_keys()),
            "alerted": len([m for m in self.aws.items_of_kind("event-marker") if "alert_outcome" in m]),
        }
        self.acks.append((message, held))


def test_handler_ingests_an_iot_rule_anomaly_event(lambda_env: Aws, log_stream: io.StringIO) -> None:
    # Exactly what `SELECT *, topic(2) AS thing_from_topic FROM 'edge/+/anomalies'` delivers.
    event = json.loads(json.dumps(anomaly_payload()))

    response = handler(event, FakeLambdaContext())  # type: ignore[arg-type]

    assert response["kind"] == "anomaly"
    assert response["duplicate"] is False
    assert response["alert"] == "sent"
    assert response["archive_key"] == f"anomalies/2013/12/11/{THING}/3f2a9c1d7b8e4f60a1b2c3d4e5f60718.json"
    assert len(lambda_env.items_of_kind("anomaly")) == 1
    assert lambda_env.archive_keys() == [response["archive_key"]]
    assert len(lambda_env.received_alerts()) == 1

    # A redelivery through the same entry point changes nothing.
    again = handler(event, FakeLambdaContext())  # type: ignore[arg-type]
    assert again["duplicate"] is True
    assert again["alert"] == "already_handled"
    assert len(lambda_env.items_of_kind("anomaly")) == 1
    assert lambda_env.received_alerts() == []

    logs = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.startswith("{")]
    ingested = [entry for entry in logs if entry.get("message") == "anomaly ingested"]
    assert len(ingested) == 2
    assert ingested[0]["thing_name"] == THING
    assert ingested[0]["event_id"] == "3f2a9c1d7b8e4f60a1b2c3d4e5f60718"
    assert ingested[0]["service"] == "edgeml-ingest"


def test_handler_stores_a_heartbeat(lambda_env: Aws) -> None:
    response = handler(heartbeat_payload(), FakeLambdaContext())  # type: ignore[arg-type]

    assert response["kind"] == "heartbeat"
    assert response["thing_name"] == THING
    [item] = lambda_env.items()
    assert item["kind"] == {"S": "heartbeat"}
    assert int(item["expires_at"]["N"]) == response["expires_at"]
    assert lambda_env.archive_keys() == []
    assert lambda_env.received_alerts() == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(
            anomaly_payload(thing_from_topic="intruder-9"), "does not match the publishing device", id="spoof"
        ),
        pytest.param(anomaly_payload(score=math.nan), "field 'score' must be finite", id="nan"),
        pytest.param(anomaly_payload(values=[[1.0]] * 5000), "field 'values' is too large", id="oversized"),
        pytest.param(anomaly_payload(schema=None), "message has no 'schema' field", id="no-schema"),
        pytest.param(heartbeat_payload(thing_name=7), "field 'thing_name' must be a string", id="heartbeat"),
    ],
)
def test_refused_events_raise_and_write_nothing(aws: Aws, event: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEventError) as raised:
        handle(event, _deps(aws))

    assert message in str(raised.value)
    assert aws.items() == []
    assert aws.archive_keys() == []
    assert aws.received_alerts() == []


def test_throttling_surfaces_as_retryable_so_the_lambda_retries(aws: Aws) -> None:
    # A store whose DynamoDB client answers with the throttling ClientError.
    client = boto3.client("dynamodb", region_name=REGION)
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "transact_write_items",
            service_error_code="ProvisionedThroughputExceededException",
            service_message="The level of configured provisioned throughput for the table was exceeded.",
            http_status_code=400,
        )
        with pytest.raises(IngestRetryableError, match="storing the event failed with ProvisionedThroughput"):
            handle(anomaly_payload(), _deps(aws, store=DynamoEventStore("edgeml-events", client=client)))

    assert aws.archive_keys() == []
    assert aws.received_alerts() == []
    # The retry, against a healthy table, goes through.
    assert handle(anomaly_payload(), _deps(aws))["alert"] == "sent"


# --- delivery acks (contracts §4) ---------------------------------------------------------------------


def test_an_event_is_acked_only_once_stored_archived_and_alerted(aws: Aws) -> None:
    publisher = RecordingPublisher(aws)

    response = handle(anomaly_payload(), _deps(aws, acks=publisher))

    assert response["ack"] == "published"
    [(message, held)] = publisher.acks
    assert (message.topic, message.event_ids) == (f"edge/{THING}/acks", (EVENT_ID,))
    assert json.loads(message.payload) == {"schema": "edgeml.ack/1", "event_ids": [EVENT_ID]}
    assert held == {"events": 1, "archived": 1, "alerted": 1}


def test_a_duplicate_of_a_stored_event_is_acked_again(aws: Aws) -> None:
    # The device resends when it did not hear the first ack; only an ack stops the resends.
    publisher = RecordingPublisher(aws)
    handle(anomaly_payload(), _deps(aws, acks=publisher))

    again = handle(anomaly_payload(), _deps(aws, acks=publisher))

    assert again["duplicate"] is True
    assert again["ack"] == "published"
    assert [m.event_ids for m, _ in publisher.acks] == [(EVENT_ID,), (EVENT_ID,)]


def test_a_refused_event_is_not_acked(aws: Aws) -> None:
    publisher = RecordingPublisher(aws)
    with pytest.raises(BadEventError, match="does not match the publishing device"):
        handle(anomaly_payload(thing_from_topic="intruder-9"), _deps(aws, acks=publisher))
    assert publisher.acks == []


def test_an_event_whose_ingest_failed_is_not_acked_and_its_retry_is(aws: Aws) -> None:
    # Stored, then the archive write is throttled: the invocation fails and nothing is acked, so the
    # device keeps the event; the retry finishes the archive step and acks it.
    publisher = RecordingPublisher(aws)
    s3 = boto3.client("s3", region_name=REGION)
    with Stubber(s3) as stubber:
        stubber.add_client_error("put_object", service_error_code="SlowDown", http_status_code=503)
        deps = Dependencies(
            config=aws.config,
            store=aws.store(),
            archive=S3Archive(aws.config.archive_bucket, client=s3),
            alerts=aws.alerts(),
            clock=Clock(),
            acks=publisher,
        )
        with pytest.raises(IngestRetryableError, match="archiving the event failed with SlowDown"):
            handle(anomaly_payload(), deps)
    assert len(aws.items_of_kind("anomaly")) == 1
    assert publisher.acks == []

    assert handle(anomaly_payload(), _deps(aws, acks=publisher))["ack"] == "published"
    assert [held for _, held in publisher.acks] == [{"events": 1, "archived": 1, "alerted": 1}]


def test_heartbeats_are_not_acked(aws: Aws) -> None:
    publisher = RecordingPublisher(aws)
    handle(heartbeat_payload(), _deps(aws, acks=publisher))
    assert publisher.acks == []


def test_an_ack_that_cannot_be_published_keeps_the_event_and_is_logged_and_counted(
    aws: Aws, log_stream: io.StringIO
) -> None:
    lines: list[str] = []
    deps = _deps(
        aws,
        acks=RecordingPublisher(aws, fail=True),
        ack_metrics=EmfAckMetrics("EdgeML/t", write=lines.append),
    )

    response = handle(anomaly_payload(), deps)  # no exception: the invocation succeeds

    assert response["ack"] == "not_published"
    assert response["duplicate"] is False
    assert len(aws.items_of_kind("anomaly")) == 1
    assert len(aws.archive_keys()) == 1
    [metric] = [json.loads(line) for line in lines]
    assert metric[ACK_PUBLISH_FAILURES_METRIC] == [1.0]
    logs = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.startswith("{")]
    [warning] = [entry for entry in logs if entry["level"] == "WARNING"]
    assert warning["message"].startswith("ack not published")
    assert warning["ack_topic"] == f"edge/{THING}/acks"
    assert warning["unacked_event_ids"] == [EVENT_ID]
    assert warning["error"] == f"ack to edge/{THING}/acks not published: ThrottlingException: Rate exceeded"


def test_handler_publishes_the_ack_through_iot_data(lambda_env: Aws) -> None:
    # The deployed wiring (publisher built per cold start), with the endpoint override of lambda_env.
    response = handler(anomaly_payload(), FakeLambdaContext())  # type: ignore[arg-type]

    assert response["ack"] == "published"
    [(topic, payload)] = iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads
    assert topic == f"edge/{THING}/acks"
    assert json.loads(payload) == {"schema": "edgeml.ack/1", "event_ids": [EVENT_ID]}
