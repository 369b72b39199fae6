"""Lambda entry point: parse the event, publish each model it announces, log and return the outcome.

Failure policy: a refused event or model (``BadEventError``, ``ModelValidationError``, ...) is logged and
**re-raised**, so the invocation fails visibly: the function's Errors metric, the asynchronous retries and
then the on-failure destination / DLQ carry the event to an operator. Retrying is harmless because
refusals change nothing and successful publishes are idempotent. ``RetryableError`` (throttling) is
re-raised for the same retries.

An S3 event for the ``models/`` copy the publisher itself wrote of a SageMaker archive's model (marked
with ``COPIED_FROM_METADATA``) is logged and skipped: the invocation that wrote it publishes that model.

With ``LINEAGE_TABLE`` set, the model lifecycle runs instead of a plain publish (``lambdas.lifecycle``):
the gate, a deployment to the canary group, and the lineage record. A model the gate rejects is a
normal outcome, not a failure: it is recorded as REJECTED with the reason and logged as an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.lifecycle.adapters import DynamoRegistry
from lambdas.lifecycle.config import ENV_LINEAGE_TABLE, LifecycleConfig
from lambdas.lifecycle.config import load_config as load_lifecycle_config
from lambdas.lifecycle.core import PublishOutcome, publish_gated
from lambdas.lifecycle.errors import LifecycleError
from lambdas.lifecycle.errors import RetryableError as LifecycleRetryableError
from lambdas.lifecycle.registry import Registry
from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.config import PublisherConfig, load_config
from lambdas.publisher.core import (
    ComponentRegistry,
    DeploymentService,
    ModelStore,
    PublishResult,
    load_and_validate,
    named_request,
    publish_model,
    publisher_copy_source,
)
from lambdas.publisher.errors import (
    ArtifactConflictError,
    BadEventError,
    ModelNotFoundError,
    ModelValidationError,
    PublisherError,
    RetryableError,
)
from lambdas.publisher.events import PublishRequest, parse_event

# A Logger only configures stdlib logging; it opens no connection, so module level is safe.
logger = Logger(service="edgeml-publisher")

_REFUSALS = (BadEventError, ModelValidationError, ModelNotFoundError, ArtifactConflictError)


@dataclass(frozen=True)
class Dependencies:
    config: PublisherConfig
    store: ModelStore
    components: ComponentRegistry
    deployments: DeploymentService
    # Both set: gated publish to the canary with lineage; both None: plain publish to the target group.
    lifecycle: LifecycleConfig | None = None
    registry: Registry | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def dependencies_from_environ(environ: Mapping[str, str]) -> Dependencies:
    """The function's wiring from its environment (also ``edgeml deploy``'s, in its own process)."""
    # LINEAGE_TABLE set means the gated lifecycle publish to the canary.
    lifecycle = load_lifecycle_config(environ) if environ.get(ENV_LINEAGE_TABLE) else None
    return Dependencies(
        config=load_config(environ),
        store=S3ModelStore(),
        components=GreengrassComponents(),
        deployments=GreengrassDeployments(),
        lifecycle=lifecycle,
        registry=DynamoRegistry(lifecycle.lineage_table) if lifecycle is not None else None,
    )


@cache
def _dependencies() -> Dependencies:
    # Built on the first invocation and reused while the execution environment stays warm.
    return dependencies_from_environ(os.environ)


def publish_request(request: PublishRequest, deps: Dependencies) -> PublishOutcome | PublishResult:
    """One request as the function publishes it: gated to the canary with the lifecycle, else plain."""
    if deps.lifecycle is not None and deps.registry is not None:
        if request.named_by_model:
            # The lineage record takes its name from the request, so the model's own name is read first
            # (one more read and validation of the model, once per training job; plain publishes
            # resolve it inside publish_model instead).
            _data, model = load_and_validate(request, store=deps.store, max_bytes=deps.config.max_model_bytes)
            request = named_request(request, model)
        return publish_gated(
            request,
            publisher=deps.config,
            lifecycle=deps.lifecycle,
            store=deps.store,
            components=deps.components,
            deployments=deps.deployments,
            registry=deps.registry,
            clock=deps.clock,
        )
    return publish_model(
        request,
        config=deps.config,
        store=deps.store,
        components=deps.components,
        deployments=deps.deployments,
    )


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    return handle(event, _dependencies())


def handle(event: object, deps: Dependencies) -> dict[str, object]:
    try:
        requests = parse_event(event, model_bucket=deps.config.model_bucket)
        published: list[dict[str, object]] = []
        outcomes: list[dict[str, object]] = []
        for request in requests:
            logger.append_keys(
                model_uri=request.uri, origin=request.origin, training_job=request.training_job
            )
            copied_from = publisher_copy_source(request, deps.store)
            if copied_from is not None:
                logger.info("the publisher's own copy of a model; nothing to do", copied_from=copied_from)
                continue
            outcome = _publish(request, deps)
            if isinstance(outcome, PublishOutcome):
                outcomes.append(outcome.to_dict())
                if outcome.publish is not None:
                    published.append(outcome.publish.to_dict())
                continue
            logger.info("model published", extra=outcome.to_dict())
            published.append(outcome.to_dict())
    except _REFUSALS as exc:
        # Expected outcomes of a bad event or model: the reason is the message, a traceback adds nothing.
        logger.error("publish refused", error_type=type(exc).__name__, error=str(exc))  # noqa: TRY400
        raise
    except RetryableError as exc:
        logger.warning("transient failure, the invocation will be retried", error=str(exc))
        raise
    except (PublisherError, LifecycleError) as exc:
        logger.exception("publish failed", error_type=type(exc).__name__, error=str(exc))
        raise
    finally:
        logger.remove_keys(["model_uri", "origin", "training_job"])
    response: dict[str, object] = {"published": published}
    if deps.lifecycle is not None:
        response["outcomes"] = outcomes
    return response


def _publish(request: PublishRequest, deps: Dependencies) -> PublishOutcome | PublishResult:
    try:
        outcome = publish_request(request, deps)
    except LifecycleRetryableError as exc:
        raise RetryableError(str(exc)) from exc
    result = outcome.publish if isinstance(outcome, PublishOutcome) else outcome
    if result is not None and result.skipped_versions:
        logger.warning(
            "component versions skipped: their artifact keys held other models but no such version existed",
            skipped_versions=list(result.skipped_versions),
            component_version=result.component_version,
        )
    if not isinstance(outcome, PublishOutcome):
        return outcome
    details: dict[str, object] = {
        "model_version": outcome.model.model_version,
        "status": str(outcome.model.status),
        "reason": outcome.model.reason,
        "deployment_id": outcome.deployment_id,
    }
    if outcome.outcome == "rejected":
        logger.error("model rejected by the gate", extra=details)
    elif outcome.outcome == "duplicate":
        logger.info("model already recorded; nothing to do", extra=details)
    else:
        logger.info("model published to the canary group", extra=details)
    return outcome
