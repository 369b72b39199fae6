"""The AWS side of the ingest ports: DynamoDB (events, heartbeats, alert counters), S3 archive, SNS alerts,
IoT data-plane delivery acks.

Each adapter takes its boto3 client in the constructor, or creates one on first use, so nothing talks to
AWS at import time and tests hand in clients pointed at moto. Throttling and other transient failures
become ``IngestRetryableError`` (after botocore's own retries are spent), so the invocation fails and the
Lambda retries it; every step is idempotent, so a retry is safe. The one exception is the delivery ack:
its failures become ``AckPublishError``, which never fails the invocation (``lambdas.ingest.acks``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common.aws import ServiceAdapter, error_code, error_message
from lambdas.ingest.acks import ACK_QOS, AckMessage, AckReport
from lambdas.ingest.core import Alert, AlertSlot, Progress
from lambdas.ingest.drift import DriftReport, TrainingProfile
from lambdas.ingest.errors import AckPublishError, IngestError, IngestRetryableError
from lambdas.ingest.events import AnomalyEvent, Heartbeat
from lambdas.ingest.table import (
    ALERT_COUNTER_SK,
    MARKER_SK,
    PARTITION_KEY,
    SORT_KEY,
    STREAM_INDEX_PARTITION_KEY,
    STREAM_INDEX_SORT_KEY,
    TTL_ATTRIBUTE,
    device_pk,
    event_sk,
    heartbeat_sk,
    marker_pk,
    stream_pk,
    timestamp_key,
)
from lambdas.lifecycle.registry import MODEL_SK, model_pk
from lambdas.lifecycle.registry import PARTITION_KEY as REGISTRY_PK
from lambdas.lifecycle.registry import SORT_KEY as REGISTRY_SK

# The metric names the drift alarms watch (infra/parts/drift.py imports them).
SCORE_PSI_METRIC: Final = "HeartbeatScorePsi"
INPUT_SHIFT_METRIC: Final = "HeartbeatInputShift"
OVER_THRESHOLD_RATIO_METRIC: Final = "HeartbeatOverThresholdRatio"
# Delivery acks that could not be published (each one's event is resent by its device and acked then).
ACK_PUBLISH_FAILURES_METRIC: Final = "AckPublishFailures"

DATA_ATS_ENDPOINT_TYPE: Final = "iot:Data-ATS"
# Short attempts, few of them: the store, archive and alert calls share the function's 30 s timeout, and a
# slow IoT endpoint should cost an ack (the device resends the event), never the invocation. Worst case:
# 2 x (2 s + 3 s) = 10 s per call, two calls on a cold start (DescribeEndpoint, Publish): 20 s.
IOT_DATA_CLIENT_CONFIG: Final = Config(
    connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"}
)

RETRYABLE_ERROR_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSThrottlingException",
        "SlowDown",
        "TransactionConflictException",
        "ConditionalRequestConflict",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
# Per-item reasons inside a TransactionCanceledException that a retry can clear.
RETRYABLE_CANCELLATION_CODES: Final = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"}
)


@contextmanager
def retryable_errors(operation: str) -> Iterator[None]:
    """Turn transient ``ClientError``s into ``IngestRetryableError``; let every other error through."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in RETRYABLE_ERROR_CODES:
            raise IngestRetryableError(f"{operation} failed with {code}; retry the invocation") from exc
        raise


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    # repr is the shortest text that round-trips the float; DynamoDB accepts exponent notation.
    return {"N": str(value) if isinstance(value, int) else repr(value)}


class DynamoEventStore(ServiceAdapter):
    """Events, markers, heartbeats and alert counters in one table (layout in ``lambdas.ingest.table``)."""

    service_name = "dynamodb"

    def __init__(self, table_name: str, client: BaseClient | None = None) -> None:
        super().__init__(client)
        self._table_name = table_name

    def put_new_event(self, event: AnomalyEvent, *, received_at: float) -> bool:
        sort_key = event_sk(event.timestamp, event.event_id)
        item: dict[str, Any] = {
            PARTITION_KEY: _s(device_pk(event.thing_name)),
            SORT_KEY: _s(sort_key),
            STREAM_INDEX_PARTITION_KEY: _s(stream_pk(event.thing_name, event.stream)),
            STREAM_INDEX_SORT_KEY: _s(sort_key),
            "kind": _s("anomaly"),
            "event_id": _s(event.event_id),
            "thing_name": _s(event.thing_name),
            "stream": _s(event.stream),
            "timestamp": _s(timestamp_key(event.timestamp)),
            "score": _n(event.score),
            "peak_score": _n(event.peak_score),
            "threshold": _n(event.threshold),
            "model_version": _s(event.model_version),
            "channels": {"L": [_s(c) for c in event.channels]},
            # One string instead of a nested list of numbers: compact, and read back as a whole.
            "values_json": _s(json.dumps(event.values, separators=(",", ":"))),
            "suppressed": _n(event.suppressed),
            "received_at": _n(received_at),
        }
        if event.start is not None:
            item["start"] = _s(timestamp_key(event.start))
        if event.end is not None:
            item["end"] = _s(timestamp_key(event.end))
        marker = {
            PARTITION_KEY: _s(marker_pk(event.event_id)),
            SORT_KEY: _s(MARKER_SK),
            "kind": _s("event-marker"),
            "event_id": _s(event.event_id),
            "thing_name": _s(event.thing_name),
            "event_sk": _s(sort_key),
            "received_at": _n(received_at),
            "archived": {"BOOL": False},
        }
        absent = {
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        }
        try:
            with retryable_errors("storing the event"):
                self.client.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": self._table_name, "Item": item, **absent}},
                        # The marker makes the duplicate check independent of the timestamp: a
                        # redelivery with a re-serialised timestamp still hits it.
                        {"Put": {"TableName": self._table_name, "Item": marker, **absent}},
                    ]
                )
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = [str(r.get("Code", "")) for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                return False
            if RETRYABLE_CANCELLATION_CODES.intersection(reasons):
                raise IngestRetryableError(f"storing the event was cancelled ({reasons}); retry") from exc
            raise
        return True

    def get_progress(self, event_id: str) -> Progress:
        with retryable_errors("reading the event marker"):
            response = self.client.get_item(
                TableName=self._table_name,
                Key={PARTITION_KEY: _s(marker_pk(event_id)), SORT_KEY: _s(MARKER_SK)},
                ConsistentRead=True,
            )
        item = response.get("Item")
        if item is None:
            raise IngestError(f"event {event_id} is stored but its marker item is missing")
        return Progress(
            archived=bool(item.get("archived", {}).get("BOOL", False)),
            alerted="alert_outcome" in item,
        )

    def mark_archived(self, event_id: str, archive_key: str) -> None:
        self._update_marker(
            event_id,
            "SET archived = :true, archive_key = :key",
            {":true": {"BOOL": True}, ":key": _s(archive_key)},
        )

    def mark_alerted(self, event_id: str, outcome: str) -> None:
        self._update_marker(event_id, "SET alert_outcome = :outcome", {":outcome": _s(outcome)})

    def _update_marker(self, event_id: str, expression: str, values: dict[str, Any]) -> None:
        with retryable_errors("updating the event marker"):
            self.client.update_item(
                TableName=self._table_name,
                Key={PARTITION_KEY: _s(marker_pk(event_id)), SORT_KEY: _s(MARKER_SK)},
                UpdateExpression=expression,
                # Never create a marker here: only put_new_event does, together with the event.
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ExpressionAttributeValues=values,
            )

    def acquire_alert_slot(
        self, thing_name: str, *, window_start: int, limit: int, expires_at: int
    ) -> AlertSlot:
        """Take one of ``limit`` alert slots in the window, or count a suppressed alert.

        Three conditional updates on the device's counter item, each atomic, so concurrent invocations
        for the same device never grant more than ``limit`` slots per window.
        """
        key = {PARTITION_KEY: _s(device_pk(thing_name)), SORT_KEY: _s(ALERT_COUNTER_SK)}
        names = {
            "#pk": PARTITION_KEY,
            "#ws": "window_start",
            "#sent": "sent",
            "#sup": "suppressed",
            "#ttl": TTL_ATTRIBUTE,
        }
        common = {":ws": _n(window_start), ":one": _n(1), ":exp": _n(expires_at)}
        attempts = (
            # Same window, a slot left.
            (
                "SET #sent = #sent + :one, #sup = :zero, #ttl = :exp",
                "attribute_exists(#pk) AND #ws = :ws AND #sent < :limit",
                {**common, ":zero": _n(0), ":limit": _n(limit)},
            ),
            # First alert of a new window (or of the device): start the window with this alert.
            (
                "SET #ws = :ws, #sent = :one, #sup = :zero, #ttl = :exp",
                "attribute_not_exists(#pk) OR #ws < :ws",
                {**common, ":zero": _n(0)},
            ),
        )
        for update, condition, values in attempts:
            try:
                with retryable_errors("taking an alert slot"):
                    response = self.client.update_item(
                        TableName=self._table_name,
                        Key=key,
                        UpdateExpression=update,
                        ConditionExpression=condition,
                        ExpressionAttributeNames=names,
                        ExpressionAttributeValues=values,
                        ReturnValues="UPDATED_OLD",
                    )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                continue
            old = response.get("Attributes", {})
            return AlertSlot(granted=True, suppressed_before=int(old.get("suppressed", {}).get("N", "0")))
        # The window is full: count the alert so the next one sent reports it.
        with retryable_errors("counting a suppressed alert"):
            self.client.update_item(
                TableName=self._table_name,
                Key=key,
                UpdateExpression="ADD #sup :one SET #ttl = :exp",
                ExpressionAttributeNames={"#sup": "suppressed", "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":one": _n(1), ":exp": _n(expires_at)},
            )
        return AlertSlot(granted=False, suppressed_before=0)

    def put_heartbeat(
        self, heartbeat: Heartbeat, *, received_at: float, expires_at: int, drift: DriftReport | None = None
    ) -> None:
        item: dict[str, Any] = {
            PARTITION_KEY: _s(device_pk(heartbeat.thing_name)),
            SORT_KEY: _s(heartbeat_sk(heartbeat.timestamp)),
            "kind": _s("heartbeat"),
            "thing_name": _s(heartbeat.thing_name),
            "timestamp": _s(timestamp_key(heartbeat.timestamp)),
            "counters": {"M": {name: _n(value) for name, value in heartbeat.counters.items()}},
            "rejects": {"M": {kind: _n(count) for kind, count in heartbeat.rejects.items()}},
            "body": _s(heartbeat.raw_json),
            "received_at": _n(received_at),
            TTL_ATTRIBUTE: _n(expires_at),
        }
        if heartbeat.model_version is not None:
            item["model_version"] = _s(heartbeat.model_version)
        if drift is not None:
            item["drift"] = {"M": _drift_attributes(drift)}
        # A redelivered heartbeat has the same key and content: overwriting is the idempotent write.
        with retryable_errors("storing the heartbeat"):
            self.client.put_item(TableName=self._table_name, Item=item)


def _drift_attributes(report: DriftReport) -> dict[str, Any]:
    values: dict[str, Any] = {"model_version": _s(report.model_version), "windows": _n(report.windows)}
    for name in ("score_psi", "over_threshold_fraction", "over_threshold_ratio", "input_shift"):
        value = getattr(report, name)
        if value is not None:  # DynamoDB has no "unknown" number; an absent attribute says it
            values[name] = _n(value)
    values["input_shift_by_channel"] = {"L": [_n(v) for v in report.input_shift_by_channel]}
    return values


class RegistryTrainingProfiles(ServiceAdapter):
    """Training profiles from the lineage registry's model items (``lambdas/lifecycle/registry.py``).

    A model_version's training metrics never change once recorded, so found profiles are kept for the
    life of the execution environment: a warm function reads each model's item once, not per heartbeat.
    A miss is not kept: the model may be registered a moment later.
    """

    service_name = "dynamodb"

    def __init__(self, table_name: str, client: BaseClient | None = None) -> None:
        super().__init__(client)
        self._table_name = table_name
        self._found: dict[str, TrainingProfile] = {}

    def profile(self, model_version: str) -> TrainingProfile | None:
        if model_version in self._found:
            return self._found[model_version]
        with retryable_errors("reading the model's training metrics"):
            response = self.client.get_item(
                TableName=self._table_name,
                Key={REGISTRY_PK: _s(model_pk(model_version)), REGISTRY_SK: _s(MODEL_SK)},
                ProjectionExpression="training_metrics_json",
            )
        text = response.get("Item", {}).get("training_metrics_json", {}).get("S")
        if text is None:
            return None
        try:
            metrics = json.loads(text)
        except json.JSONDecodeError:
            return None
        profile = TrainingProfile.from_metrics(metrics) if isinstance(metrics, dict) else None
        if profile is not None:
            self._found[model_version] = profile
        return profile


class EmfDriftMetrics:
    """Drift statistics as one CloudWatch Embedded Metric Format line on stdout (the function's log).

    No dimensions: the alarms watch the fleet, and a per-device or per-model dimension would make a new
    metric (and cost) per value. The model version rides along as a property, searchable in Logs Insights.
    """

    def __init__(self, namespace: str, write: Callable[[str], object] = print) -> None:
        self._namespace = namespace
        self._write = write

    def emit(self, report: DriftReport) -> None:
        # A fresh provider per line: powertools' Metrics class shares its metric set process-wide.
        provider = AmazonCloudWatchEMFProvider(namespace=self._namespace)
        for metric, value in (
            (SCORE_PSI_METRIC, report.score_psi),
            (INPUT_SHIFT_METRIC, report.input_shift),
            (OVER_THRESHOLD_RATIO_METRIC, report.over_threshold_ratio),
        ):
            if value is not None:
                provider.add_metric(name=metric, unit=MetricUnit.NoUnit, value=value)
        if not provider.metric_set:
            return
        provider.add_metadata(key="model_version", value=report.model_version)
        provider.add_metadata(key="windows", value=report.windows)
        self._write(json.dumps(provider.serialize_metric_set(), separators=(",", ":")))


class S3Archive(ServiceAdapter):
    """Raw event JSON in S3, each key written once."""

    service_name = "s3"

    def __init__(self, bucket: str, client: BaseClient | None = None) -> None:
        super().__init__(client)
        self._bucket = bucket

    def put(self, key: str, body: bytes) -> bool:
        try:
            with retryable_errors("archiving the event"):
                self.client.put_object(
                    Bucket=self._bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json"
                )
        except ClientError as exc:
            if error_code(exc) == "PreconditionFailed":
                return False  # archived by an earlier attempt; keys derive from the event, so same content
            raise
        return True


class SnsAlerts(ServiceAdapter):
    """Alerts to one SNS topic; message attributes let subscribers filter by device or stream."""

    service_name = "sns"

    def __init__(self, topic_arn: str, client: BaseClient | None = None) -> None:
        super().__init__(client)
        self._topic_arn = topic_arn

    def publish(self, alert: Alert) -> str:
        with retryable_errors("publishing the alert"):
            response = self.client.publish(
                TopicArn=self._topic_arn,
                Subject=alert.subject(),
                Message=json.dumps(alert.to_dict(), separators=(",", ":")),
                MessageAttributes={
                    "thing_name": {"DataType": "String", "StringValue": alert.thing_name},
                    "stream": {"DataType": "String", "StringValue": alert.stream},
                },
            )
        return str(response["MessageId"])


class IotDataAckPublisher:
    """Delivery acks through the IoT data plane (``iot-data`` ``Publish``, an HTTPS publish at QoS 1).

    The data plane has an account-specific endpoint: unless ``endpoint_url`` is given, it is looked up
    with ``iot:DescribeEndpoint`` (``iot:Data-ATS``) on the first publish, and the client made then is
    kept for the life of the execution environment. A failed lookup is retried on the next publish.
    """

    def __init__(
        self,
        client: BaseClient | None = None,
        *,
        endpoint_url: str | None = None,
        iot_client: BaseClient | None = None,
    ) -> None:
        self._client = client
        self._endpoint_url = endpoint_url
        self._iot_client = iot_client

    @property
    def client(self) -> Any:
        if self._client is None:
            url = self._endpoint_url or self._data_endpoint()
            self._client = boto3.client("iot-data", endpoint_url=url, config=IOT_DATA_CLIENT_CONFIG)
        return self._client

    def _data_endpoint(self) -> str:
        iot: Any = self._iot_client or boto3.client("iot", config=IOT_DATA_CLIENT_CONFIG)
        address = iot.describe_endpoint(endpointType=DATA_ATS_ENDPOINT_TYPE)["endpointAddress"]
        return f"https://{address}"

    def publish(self, message: AckMessage) -> None:
        try:
            self.client.publish(topic=message.topic, qos=ACK_QOS, payload=message.payload)
        except ClientError as exc:
            raise AckPublishError(
                f"ack to {message.topic} not published: {error_code(exc)}: {error_message(exc)}"
            ) from exc
        except BotoCoreError as exc:  # no connection, timeouts, no credentials: botocore's own errors
            raise AckPublishError(f"ack to {message.topic} not published: {exc}") from exc


class EmfAckMetrics:
    """Failed ack publishes as one CloudWatch Embedded Metric Format line, like ``EmfDriftMetrics``.

    Nothing is written for a batch whose acks all went out, so the metric has data only when acks fail.
    """

    def __init__(self, namespace: str, write: Callable[[str], object] = print) -> None:
        self._namespace = namespace
        self._write = write

    def emit(self, report: AckReport) -> None:
        if not report.failed:
            return
        provider = AmazonCloudWatchEMFProvider(namespace=self._namespace)
        provider.add_metric(name=ACK_PUBLISH_FAILURES_METRIC, unit=MetricUnit.Count, value=len(report.failed))
        provider.add_metadata(key="unacked_events", value=len(report.unacked_event_ids))
        self._write(json.dumps(provider.serialize_metric_set(), separators=(",", ":")))
