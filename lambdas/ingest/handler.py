"""Lambda entry point for both IoT rules (``edge/+/anomalies`` and ``edge/+/health``).

The event is the device's JSON object plus ``thing_from_topic`` (added by the rule's SQL); the ``schema``
field routes it to the anomaly or the heartbeat path.

Failure policy: IoT Core invokes the function asynchronously, so the rule's error action only covers a
failed *invoke*; a failed *invocation* goes through Lambda's asynchronous retries (configure 2) and then
the function's on-failure destination / DLQ. Therefore both kinds of error are logged and **re-raised**:

- ``BadEventError``: the message is malformed or names another device. Nothing was written, so the
  retries are harmless and the event lands in the DLQ for an operator.
- ``IngestRetryableError``: throttling or a transaction conflict. The retries usually succeed, and every
  step is idempotent, so a retry cannot store, archive or alert twice.

An anomaly event whose ingest finished (new or a duplicate) is acknowledged to its device on
``edge/<thing>/acks`` (``lambdas.ingest.acks``). An ack that cannot be published is logged and counted,
never raised: the event is stored, and the device resends it for another ack.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.ingest.acks import AckMetrics, AckPublisher, acknowledge
from lambdas.ingest.adapters import (
    DynamoEventStore,
    EmfAckMetrics,
    EmfDriftMetrics,
    IotDataAckPublisher,
    RegistryTrainingProfiles,
    S3Archive,
    SnsAlerts,
)
from lambdas.ingest.config import IngestConfig, load_config
from lambdas.ingest.core import (
    Alerts,
    Archive,
    DriftMetrics,
    EventStore,
    IngestResult,
    TrainingProfiles,
    ingest_anomaly,
    ingest_heartbeat,
)
from lambdas.ingest.errors import BadEventError, IngestError, IngestRetryableError
from lambdas.ingest.events import AnomalyEvent, parse_message

# A Logger only configures stdlib logging; it opens no connection, so module level is safe.
logger = Logger(service="edgeml-ingest")


@dataclass(frozen=True)
class Dependencies:
    config: IngestConfig
    store: EventStore
    archive: Archive
    alerts: Alerts
    clock: Callable[[], float] = field(default=time.time)
    training: TrainingProfiles | None = None
    drift_metrics: DriftMetrics | None = None
    # None: no delivery acks (callers that only store, e.g. tests of the other paths).
    acks: AckPublisher | None = None
    ack_metrics: AckMetrics | None = None


@cache
def _dependencies() -> Dependencies:
    # Built on the first invocation and reused while the execution environment stays warm.
    config = load_config(os.environ)
    return Dependencies(
        config=config,
        store=DynamoEventStore(config.events_table),
        archive=S3Archive(config.archive_bucket),
        alerts=SnsAlerts(config.alert_topic_arn),
        training=RegistryTrainingProfiles(config.lineage_table) if config.lineage_table else None,
        drift_metrics=EmfDriftMetrics(config.metrics_namespace) if config.metrics_namespace else None,
        # The data endpoint is resolved on the first ack, then kept with these dependencies.
        acks=IotDataAckPublisher(endpoint_url=config.iot_data_endpoint),
        ack_metrics=EmfAckMetrics(config.metrics_namespace) if config.metrics_namespace else None,
    )


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    return handle(event, _dependencies())


def handle(event: object, deps: Dependencies) -> dict[str, object]:
    try:
        return _route(event, deps)
    except BadEventError as exc:
        logger.exception("event refused", error_type=type(exc).__name__, error=str(exc))
        raise
    except IngestRetryableError as exc:
        logger.warning("transient failure, the invocation will be retried", error=str(exc))
        raise
    except IngestError as exc:
        logger.exception("ingest failed", error_type=type(exc).__name__, error=str(exc))
        raise
    finally:
        logger.remove_keys(["thing_name", "event_id"])


def _acknowledge(result: IngestResult, deps: Dependencies) -> str:
    if deps.acks is None:
        return "disabled"
    report = acknowledge([result], deps.acks, deps.ack_metrics)
    for failed in report.failed:
        logger.warning(
            "ack not published; the device will resend the event and it will be acked then",
            extra={
                "ack_topic": failed.message.topic,
                "unacked_event_ids": list(failed.message.event_ids),
                "error": failed.error,
            },
        )
    return "not_published" if report.failed else "published"


def _route(event: object, deps: Dependencies) -> dict[str, object]:
    message = parse_message(event)
    logger.append_keys(thing_name=message.thing_name)
    if isinstance(message, AnomalyEvent):
        logger.append_keys(event_id=message.event_id)
        result = ingest_anomaly(
            message,
            store=deps.store,
            archive=deps.archive,
            alerts=deps.alerts,
            clock=deps.clock,
            policy=deps.config.alert_policy,
        )
        # Only now, with every step of the event done: an error above raised, and nothing was acked.
        ack = _acknowledge(result, deps)
        summary = result.to_dict() | {"ack": ack}
        logger.info("anomaly ingested", extra=summary)
        return {"kind": "anomaly", **summary}
    heartbeat = ingest_heartbeat(
        message,
        store=deps.store,
        clock=deps.clock,
        ttl_days=deps.config.heartbeat_ttl_days,
        training=deps.training,
        metrics=deps.drift_metrics,
    ).to_dict()
    logger.info("heartbeat stored", extra=heartbeat)
    return {"kind": "heartbeat", **heartbeat}
