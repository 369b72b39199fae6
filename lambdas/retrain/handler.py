"""Lambda entry point: the retrain queue's messages (batch size 1), each a drift alarm entering ALARM.

Partial batch failures: a message that fails is reported in ``batchItemFailures`` and received again
after its visibility timeout; after the queue's max receives it moves to the dead-letter queue for a
person. A malformed message (``BadRequestError``) and a missing template job fail the same way, with the
reason in the log, since both need a person; so does any other SageMaker error (access denied, a
refused request). Throttling fails it so that a later receive retries.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from lambdas.retrain.adapters import SageMakerTrainingJobs
from lambdas.retrain.config import RetrainConfig, load_config
from lambdas.retrain.core import TrainingJobs, parse_alarm_event, retrain
from lambdas.retrain.errors import RetrainError, RetrainRetryableError

# A Logger only configures stdlib logging; it opens no connection, so module level is safe.
logger = Logger(service="edgeml-retrain")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Dependencies:
    config: RetrainConfig
    jobs: TrainingJobs
    clock: Callable[[], datetime] = field(default=_utc_now)


@cache
def _dependencies() -> Dependencies:
    # Built on the first invocation and reused while the execution environment stays warm.
    return Dependencies(config=load_config(os.environ), jobs=SageMakerTrainingJobs())


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    return handle(event, _dependencies())


def handle(event: object, deps: Dependencies) -> dict[str, object]:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise RetrainError("the event is not an SQS batch (no 'Records' list)")
    failures: list[dict[str, str]] = []
    for record in records:
        message_id = str(record.get("messageId", ""))
        try:
            alarm = parse_alarm_event(str(record.get("body", "")))
            result = retrain(alarm, config=deps.config, jobs=deps.jobs, now=deps.clock())
        except RetrainRetryableError as exc:
            logger.warning(
                "transient failure, the message will be retried", message_id=message_id, error=str(exc)
            )
            failures.append({"itemIdentifier": message_id})
        except (RetrainError, ClientError) as exc:
            logger.exception(
                "retraining request failed",
                message_id=message_id,
                error_type=type(exc).__name__,
                error=str(exc),
            )
            failures.append({"itemIdentifier": message_id})
        else:
            logger.info("retraining request handled", extra={"message_id": message_id, **result.to_dict()})
    return {"batchItemFailures": failures}
