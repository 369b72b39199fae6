"""Transient AWS failures become IngestRetryableError; other failures pass through unchanged.

The clients are real boto3 clients with botocore's Stubber: each call is checked against the service model
and answered with the ClientError that DynamoDB, S3 or SNS would return.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from lambdas.ingest.adapters import DynamoEventStore, S3Archive, SnsAlerts
from lambdas.ingest.core import Alert
from lambdas.ingest.errors import IngestRetryableError
from lambdas.ingest.events import AnomalyEvent, Heartbeat, parse_message
from tests.lambdas.ingest.helpers import NOW, REGION, anomaly_payload, heartbeat_payload


@pytest.fixture
def dynamodb() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("dynamodb", region_name=REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _event() -> AnomalyEvent:
    event = parse_message(anomaly_payload())
    assert isinstance(event, AnomalyEvent)
    return event


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
def test_throttled_event_write_is_retryable(dynamodb: tuple[Any, Stubber], code: str) -> None:
    client, stubber = dynamodb
    stubber.add_client_error("transact_write_items", service_error_code=code, http_status_code=400)

    with pytest.raises(IngestRetryableError) as raised:
        DynamoEventStore("events", client=client).put_new_event(_event(), received_at=NOW)

    assert str(raised.value) == f"storing the event failed with {code}; retry the invocation"
    assert isinstance(raised.value.__cause__, ClientError)


def test_transaction_cancelled_by_throttling_is_retryable(dynamodb: tuple[Any, Stubber]) -> None:
    client, stubber = dynamodb
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        http_status_code=400,
        response_meta={},
        modeled_fields={"CancellationReasons": [{"Code": "ThrottlingError"}, {"Code": "None"}]},
    )

    with pytest.raises(IngestRetryableError, match=r"cancelled \(\['ThrottlingError', 'None'\]\)"):
        DynamoEventStore("events", client=client).put_new_event(_event(), received_at=NOW)


def test_throttled_alert_counter_and_heartbeat_are_retryable(dynamodb: tuple[Any, Stubber]) -> None:
    client, stubber = dynamodb
    stubber.add_client_error("update_item", service_error_code="ThrottlingException", http_status_code=400)
    stubber.add_client_error(
        "put_item", service_error_code="ProvisionedThroughputExceededException", http_status_code=400
    )
    store = DynamoEventStore("events", client=client)
    heartbeat = parse_message(heartbeat_payload())
    assert isinstance(heartbeat, Heartbeat)

    with pytest.raises(IngestRetryableError, match="taking an alert slot failed with ThrottlingException"):
        store.acquire_alert_slot("sensor-gw-01", window_start=0, limit=3, expires_at=10)
    with pytest.raises(IngestRetryableError, match="storing the heartbeat failed with ProvisionedThroughput"):
        store.put_heartbeat(heartbeat, received_at=NOW, expires_at=10)


def test_non_transient_errors_are_not_disguised_as_retryable(dynamodb: tuple[Any, Stubber]) -> None:
    client, stubber = dynamodb
    stubber.add_client_error(
        "transact_write_items", service_error_code="AccessDeniedException", http_status_code=400
    )

    with pytest.raises(ClientError) as raised:
        DynamoEventStore("events", client=client).put_new_event(_event(), received_at=NOW)

    assert not isinstance(raised.value, IngestRetryableError)
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"


def test_throttled_archive_and_alert_are_retryable() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    sns = boto3.client("sns", region_name=REGION)
    alert = Alert(
        thing_name="sensor-gw-01",
        stream="s",
        event_id="e" * 32,
        timestamp="2013-12-11T06:00:00.000000Z",
        score=1.0,
        peak_score=1.0,
        threshold=0.5,
        model_version="m",
        device_suppressed=0,
        alerts_suppressed=0,
        archive_key="k",
    )
    with Stubber(s3) as s3_stub, Stubber(sns) as sns_stub:
        s3_stub.add_client_error("put_object", service_error_code="SlowDown", http_status_code=503)
        sns_stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)

        with pytest.raises(IngestRetryableError, match="archiving the event failed with SlowDown"):
            S3Archive("bucket", client=s3).put("k", b"{}")
        with pytest.raises(IngestRetryableError, match="publishing the alert failed with Throttling"):
            SnsAlerts("arn:aws:sns:us-east-1:123456789012:t", client=sns).publish(alert)


def test_alert_subject_is_ascii_and_bounded() -> None:
    alert = Alert(
        thing_name="sensor-gw-01",
        stream="température-" + "x" * 200,
        event_id="e" * 32,
        timestamp="t",
        score=12.345,
        peak_score=12.345,
        threshold=4.1,
        model_version="m",
        device_suppressed=0,
        alerts_suppressed=0,
        archive_key="k",
    )
    subject = alert.subject()
    assert len(subject) == 100
    assert subject.startswith("Anomaly on sensor-gw-01/temp?rature-xxx")
    assert subject.isascii()
