"""The scheduled model-lifecycle check: promote a healthy canary, roll back a failed one.

It runs the publisher's image (``lambdas/publisher/Dockerfile`` already contains ``lambdas/lifecycle``)
with the command overridden, so one image is built and pushed for both functions: the asset's hash does
not depend on the command, which CloudFormation sets as the function's ``ImageConfig``.

Invocation and failure path: an EventBridge schedule invokes the function asynchronously. The check reads
the whole state each time, so a failed run is not retried by Lambda (the next tick is the retry) and an
event older than one interval is worthless (the next tick supersedes it). Failed and expired invocations,
and events EventBridge cannot deliver, go to one dead-letter queue. Permissions are added by the stack.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.parts.common import AsyncInvoke, container_function, encrypted_queue, function_identity
from infra.parts.publisher import PUBLISHER_DOCKERFILE, publisher_image

LIFECYCLE_HANDLER = "lambdas.lifecycle.handler.handler"
# Promotion and rollback read the registry, then deploy: two concurrent runs could both deploy.
RESERVED_CONCURRENCY = 1
# A few Greengrass, IoT and DynamoDB calls per canary device; the canary is a handful of devices.
LIFECYCLE_TIMEOUT = Duration.minutes(2)
# No onnxruntime session here, only the SDK clients.
LIFECYCLE_MEMORY_MB = 512
# EventBridge's own retries when the invoke fails (throttled, function being updated); the event is still
# useful for as long as Lambda would keep it.
TARGET_RETRY_ATTEMPTS = 2


class ModelLifecycle(Construct):
    """Attributes: ``function``, ``role``, ``dead_letter_queue``, ``log_group``, ``schedule_rule``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        code_directory: str,
        environment: dict[str, str],
        schedule_interval: Duration,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        self.dead_letter_queue = encrypted_queue(self, "DeadLetterQueue")
        identity = function_identity(
            self,
            description="Model lifecycle: promote a healthy canary to the fleet, roll back a failed one",
            log_retention=log_retention,
            removal_policy=removal_policy,
        )
        self.log_group, self.role = identity.log_group, identity.role
        self.function = container_function(
            self,
            identity=identity,
            code_directory=code_directory,
            dockerfile=PUBLISHER_DOCKERFILE,
            image=publisher_image(code_directory),
            cmd=[LIFECYCLE_HANDLER],
            environment=environment,
            memory_size=LIFECYCLE_MEMORY_MB,
            timeout=LIFECYCLE_TIMEOUT,
            reserved_concurrency=RESERVED_CONCURRENCY,
            # The next scheduled run is the retry; see the module docstring.
            invoke=AsyncInvoke(
                retry_attempts=0, max_event_age=schedule_interval, dead_letter_queue=self.dead_letter_queue
            ),
        )

        self.schedule_rule = events.Rule(
            self,
            "Schedule",
            description="Check the canary: promote it when healthy, roll it back when failed (if enabled)",
            schedule=events.Schedule.rate(schedule_interval),
        )
        self.schedule_rule.add_target(
            targets.LambdaFunction(
                self.function,
                dead_letter_queue=self.dead_letter_queue,
                retry_attempts=TARGET_RETRY_ATTEMPTS,
                max_event_age=schedule_interval,
            )
        )
