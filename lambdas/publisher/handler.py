"""Lambda entry point: parse the event, publish each model it announces, log and return the outcome.

Failure policy: a refused event or model (``BadEventError``, ``ModelValidationError``, ...) is logged and
**re-raised**, so the invocation fails visibly: the function's Errors metric, the asynchronous retries and
then the on-failure destination / DLQ carry the event to an operator. Retrying is harmless because
refusals change nothing and successful publishes are idempotent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.config import PublisherConfig, load_config
from lambdas.publisher.core import ComponentRegistry, DeploymentService, ModelStore, publish_model
from lambdas.publisher.errors import (
    ArtifactConflictError,
    BadEventError,
    ModelNotFoundError,
    ModelValidationError,
    PublisherError,
)
from lambdas.publisher.events import parse_event

# A Logger only configures stdlib logging; it opens no connection, so module level is safe.
logger = Logger(service="edgeml-publisher")

_REFUSALS = (BadEventError, ModelValidationError, ModelNotFoundError, ArtifactConflictError)


@dataclass(frozen=True)
class Dependencies:
    config: PublisherConfig
    store: ModelStore
    components: ComponentRegistry
    deployments: DeploymentService


@cache
def _dependencies() -> Dependencies:
    # Built on the first invocation and reused while the execution environment stays warm.
    return Dependencies(
        config=load_config(os.environ),
        store=S3ModelStore(),
        components=GreengrassComponents(),
        deployments=GreengrassDeployments(),
    )


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    return handle(event, _dependencies())


def handle(event: object, deps: Dependencies) -> dict[str, object]:
    try:
        requests = parse_event(event, model_bucket=deps.config.model_bucket)
        published = []
        for request in requests:
            logger.append_keys(model_uri=request.uri, origin=request.origin)
            result = publish_model(
                request,
                config=deps.config,
                store=deps.store,
                components=deps.components,
                deployments=deps.deployments,
            )
            logger.info("model published", extra=result.to_dict())
            published.append(result.to_dict())
    except _REFUSALS as exc:
        # Expected outcomes of a bad event or model: the reason is the message, a traceback adds nothing.
        logger.error("publish refused", error_type=type(exc).__name__, error=str(exc))  # noqa: TRY400
        raise
    except PublisherError as exc:
        logger.exception("publish failed", error_type=type(exc).__name__, error=str(exc))
        raise
    finally:
        logger.remove_keys(["model_uri", "origin"])
    return {"published": published}
