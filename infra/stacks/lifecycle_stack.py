"""Deployable component: the scheduled model-lifecycle check and its least-privilege grants.

The statements are exactly the calls of ``lambdas/lifecycle`` (``adapters.py`` and the publisher's
``GreengrassDeployments``) and the dependent actions the Service Authorization Reference lists for them.
Authorization facts beyond those in ``publisher_stack`` (``CreateDeployment`` only on ``*``, the target
scoped on ``iot:CreateJob``): Greengrass ``ListEffectiveDeployments`` and ``ListInstalledComponents`` take
a core-device ARN (``coreDevices:<thing name>``), and the canary's devices are whoever is in the group at
the time, hence ``coreDevices:*``; ``ListEffectiveDeployments`` also depends on ``iot:DescribeJobExecution``
(job or thing resource); IoT ``ListThingsInThingGroup`` takes the thing group's ARN.

The ingest events table (heartbeats) lives in the Ingest stack; its table and key are passed in, so
CloudFormation exports them and orders the stacks.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra import nag
from infra.config import INFERENCE_COMPONENT_NAME, MODEL_COMPONENT_NAME, DeployTarget, PlatformConfig
from infra.parts.fleet import Fleet
from infra.parts.ingest import drift_metric_namespace
from infra.parts.lifecycle import ModelLifecycle
from infra.parts.lineage import LineageRegistry
from infra.parts.model_store import ModelStore
from infra.stacks.common import acknowledge_lambda_defaults, log_retention, removal_policy
from infra.stacks.deployment_grants import DeploymentGrants, greengrass_arn
from lambdas.lifecycle.config import (
    ENV_AUTO_ROLLBACK,
    ENV_CANARY_THING_GROUP_ARN,
    ENV_EVENTS_TABLE,
    ENV_FLEET_THING_GROUP_ARN,
    ENV_GATE_POLICY,
    ENV_HEALTH_POLICY,
    ENV_LINEAGE_TABLE,
    ENV_METRICS_NAMESPACE,
)
from lambdas.publisher.config import (
    ENV_INFERENCE_COMPONENT_NAME,
    ENV_INFERENCE_COMPONENT_VERSION,
    ENV_MODEL_BUCKET,
    ENV_MODEL_COMPONENT_NAME,
    ENV_TARGET_THING_GROUP_ARN,
)


def policy_environment(config: PlatformConfig) -> dict[str, str]:
    """The per-environment decisions as the lifecycle reads them; an unset policy keeps the code's default."""
    # The lifecycle accepts exactly "true" / "false".
    variables = {ENV_AUTO_ROLLBACK: json.dumps(config.auto_rollback)}
    if config.gate_policy_json is not None:
        variables[ENV_GATE_POLICY] = config.gate_policy_json
    if config.health_policy_json is not None:
        variables[ENV_HEALTH_POLICY] = config.health_policy_json
    return variables


class LifecycleStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: PlatformConfig,
        model_store: ModelStore,
        fleet: Fleet,
        lineage: LineageRegistry,
        events_table: dynamodb.ITable,
        events_key: kms.IKey,
        code_directory: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        target_group = (
            fleet.canary_group if config.publisher_target is DeployTarget.CANARY else fleet.fleet_group
        )
        environment = {
            ENV_MODEL_BUCKET: model_store.bucket_name,
            ENV_INFERENCE_COMPONENT_VERSION: config.inference_component_version,
            ENV_TARGET_THING_GROUP_ARN: target_group.attr_arn,
            ENV_MODEL_COMPONENT_NAME: MODEL_COMPONENT_NAME,
            ENV_INFERENCE_COMPONENT_NAME: INFERENCE_COMPONENT_NAME,
            ENV_LINEAGE_TABLE: lineage.table.table_name,
            ENV_CANARY_THING_GROUP_ARN: fleet.canary_group.attr_arn,
            ENV_FLEET_THING_GROUP_ARN: fleet.fleet_group.attr_arn,
            # Set, so the health check also judges the canary's anomaly rate from its heartbeats.
            ENV_EVENTS_TABLE: events_table.table_name,
            # The ingest function's namespace: LifecycleNeedsAttention (EMF on stdout, so no
            # cloudwatch:PutMetricData grant) sits beside the drift metrics and is alarmed in Monitoring.
            ENV_METRICS_NAMESPACE: drift_metric_namespace(config.name_prefix),
            **policy_environment(config),
        }

        self.lifecycle = ModelLifecycle(
            self,
            "Lifecycle",
            code_directory=code_directory,
            environment=environment,
            schedule_interval=Duration.minutes(config.lifecycle_schedule_minutes),
            log_retention=log_retention(config),
            removal_policy=removal_policy(config),
        )

        core_devices = greengrass_arn("coreDevices:*")
        groups = [fleet.canary_group.attr_arn, fleet.fleet_group.attr_arn]
        # Promotion deploys to the fleet group, rollback to either group.
        grants = DeploymentGrants(groups=tuple(groups))
        statements = [
            *grants.statements(),
            # What each canary device reports: its deployment outcome and its components' states.
            iam.PolicyStatement(
                sid="CoreDeviceStatus",
                actions=["greengrass:ListEffectiveDeployments", "greengrass:ListInstalledComponents"],
                resources=[core_devices],
            ),
            iam.PolicyStatement(
                sid="DeviceJobExecutions",
                actions=["iot:DescribeJobExecution"],
                resources=[grants.jobs, grants.things],
            ),
            # Group membership from IoT: Greengrass lists only devices that already succeeded.
            iam.PolicyStatement(sid="GroupMembers", actions=["iot:ListThingsInThingGroup"], resources=groups),
            # Transactions authorize as one Put/Update per item; there is no index to grant.
            iam.PolicyStatement(
                sid="LineageRegistry",
                actions=["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[lineage.table.table_arn],
            ),
            # DynamoDB decrypts the table key as the caller; it never calls kms:Encrypt for a caller.
            iam.PolicyStatement(
                sid="LineageKey",
                actions=["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
                resources=[lineage.key.key_arn],
            ),
            # Heartbeats: one key-condition query per canary device on the base table, read only.
            iam.PolicyStatement(
                sid="Heartbeats", actions=["dynamodb:Query"], resources=[events_table.table_arn]
            ),
            iam.PolicyStatement(
                sid="HeartbeatsKey",
                actions=["kms:Decrypt", "kms:DescribeKey"],
                resources=[events_key.key_arn],
            ),
        ]
        policy = iam.Policy(self, "LifecyclePolicy", statements=statements)
        policy.attach_to_role(self.lifecycle.role)

        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, core_devices),
            "The canary's core devices are whoever is in the group at run time; names are not known.",
        )
        grants.acknowledge_wildcards(policy)

        acknowledge_lambda_defaults(self.lifecycle.role)

        CfnOutput(self, "LifecycleFunctionName", value=self.lifecycle.function.function_name)
        CfnOutput(self, "LifecycleDeadLetterQueueUrl", value=self.lifecycle.dead_letter_queue.queue_url)
