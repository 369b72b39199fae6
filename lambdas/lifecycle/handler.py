"""Scheduled Lambda (EventBridge rate rule): promote a healthy canary, wait on a pending one, roll back a
failed one when ``AUTO_ROLLBACK=true``.

A canary that is not healthy yet is the normal state between runs, so refusals are returned, not raised,
and so are "busy" (a CLI promote / rollback or a publish holds the lifecycle lock) and canary devices
that are also in the fleet group; throttling and AWS failures are raised, and the next scheduled run
tries again. A result the schedule cannot resolve by itself (``needs_attention``) is logged at WARNING
and counted in the ``LifecycleNeedsAttention`` metric (1, else 0), which is alarmed on.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.lifecycle.core import check_canary
from lambdas.lifecycle.errors import RetryableError
from lambdas.lifecycle.services import Services, build_services

logger = Logger(service="edgeml-lifecycle")


@cache
def _services() -> Services:
    return build_services(os.environ)


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    return handle(_services())


def handle(services: Services) -> dict[str, object]:
    try:
        result = dict(
            check_canary(
                lifecycle=services.config,
                registry=services.registry,
                deployments=services.deployments,
                fleet=services.fleet,
                heartbeats=services.heartbeats,
                clock=services.clock,
                sleep=services.sleep,
            )
        )
    except RetryableError as exc:
        logger.warning("transient failure; the next scheduled run retries", error=str(exc))
        raise
    attention = result.get("attention")
    reason = attention if isinstance(attention, str) else None
    if reason is not None:
        # The same result returns on every run until a person acts (docs/runbook.md).
        logger.warning("lifecycle check needs attention", extra=result)
    else:
        logger.info("lifecycle check", extra=result)
    if services.attention_metrics is not None:
        services.attention_metrics.emit(action=str(result["action"]), attention=reason)
    return result
