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

from lambdas.ingest import handler as handler_module
from lambdas.ingest.adapters import DynamoEventStore
from lambdas.ingest.errors import BadEventError, IngestRetryableError
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
    handler_module._dependencies.cache_clear()
    yield aws
    handler_module._dependencies.cache_clear()


def _deps(aws: Aws, store: Any = None) -> Dependencies:
    return Dependencies(
        config=aws.config,
        store=store or aws.store(),
        archive=aws.archive(),
        alerts=aws.alerts(),
        clock=Clock(),
    )


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
