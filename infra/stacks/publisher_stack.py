"""Deployable component: the model publisher and its least-privilege grants.

Greengrass authorization facts this relies on (AWS Service Authorization Reference, Greengrass V2):
``CreateComponentVersion`` and ``ListComponentVersions`` take the component ARN; ``DescribeComponent`` and
``GetComponent`` a component-version ARN; ``GetDeployment`` a deployment ARN. ``ListDeployments`` and
``CreateDeployment`` have no resource type, so IAM accepts them only on ``*``: a deployment's target is
not an authorized resource of ``CreateDeployment``. The target is scoped where IAM does check it, on the
dependent actions Greengrass performs under the caller's identity: it rolls a thing-group deployment out
as an IoT job (``iot:CreateJob`` on ``job/*`` and the two thing groups) after describing the target group
(``iot:DescribeThingGroup`` on the two groups). The SAR's other dependent actions of these calls
(``iot:DescribeThing``, ``iot:GetThingShadow``, ``iot:DescribeJob``) are read-only and granted on this
account's ``thing/*`` and ``job/*``; the shadow writes ``CreateDeployment`` also lists are only for
single-thing targets, which this platform does not use.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import nag
from infra.config import INFERENCE_COMPONENT_NAME, MODEL_COMPONENT_NAME, DeployTarget, PlatformConfig
from infra.parts.fleet import Fleet
from infra.parts.lineage import LineageRegistry
from infra.parts.model_store import COMPONENTS_PREFIX, MODELS_PREFIX, ModelStore
from infra.parts.publisher import TRAINING_MODEL_WILDCARD, Publisher
from infra.stacks.common import acknowledge_lambda_defaults, log_retention, removal_policy
from infra.stacks.deployment_grants import DeploymentGrants, greengrass_arn

# Environment variable names read by lambdas/publisher/config.py.
ENV_MODEL_BUCKET = "MODEL_BUCKET"
ENV_MODEL_COMPONENT_NAME = "MODEL_COMPONENT_NAME"
ENV_INFERENCE_COMPONENT_NAME = "INFERENCE_COMPONENT_NAME"
ENV_INFERENCE_COMPONENT_VERSION = "INFERENCE_COMPONENT_VERSION"
ENV_TARGET_THING_GROUP_ARN = "TARGET_THING_GROUP_ARN"
ENV_POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
# Read by lambdas/lifecycle/config.py, which the publisher uses when LINEAGE_TABLE is set.
ENV_LINEAGE_TABLE = "LINEAGE_TABLE"
ENV_CANARY_THING_GROUP_ARN = "CANARY_THING_GROUP_ARN"
ENV_FLEET_THING_GROUP_ARN = "FLEET_THING_GROUP_ARN"
POWERTOOLS_SERVICE_NAME = "model-publisher"


class PublisherStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: PlatformConfig,
        model_store: ModelStore,
        fleet: Fleet,
        lineage: LineageRegistry,
        code_directory: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        target_group = (
            fleet.canary_group if config.publisher_target is DeployTarget.CANARY else fleet.fleet_group
        )
        self.publisher = Publisher(
            self,
            "Publisher",
            code_directory=code_directory,
            environment={
                ENV_MODEL_BUCKET: model_store.bucket_name,
                ENV_MODEL_COMPONENT_NAME: MODEL_COMPONENT_NAME,
                ENV_INFERENCE_COMPONENT_NAME: INFERENCE_COMPONENT_NAME,
                ENV_INFERENCE_COMPONENT_VERSION: config.inference_component_version,
                ENV_TARGET_THING_GROUP_ARN: target_group.attr_arn,
                ENV_POWERTOOLS_SERVICE_NAME: POWERTOOLS_SERVICE_NAME,
                ENV_LINEAGE_TABLE: lineage.table.table_name,
                ENV_CANARY_THING_GROUP_ARN: fleet.canary_group.attr_arn,
                ENV_FLEET_THING_GROUP_ARN: fleet.fleet_group.attr_arn,
            },
            model_bucket_name=model_store.bucket_name,
            reserved_concurrency=config.publisher_reserved_concurrency,
            log_retention=log_retention(config),
            removal_policy=removal_policy(config),
        )
        # The bucket is referenced by its deterministic name, so CloudFormation needs the order spelled out.
        self.add_stack_dependency(Stack.of(model_store))

        model_keys = f"{MODELS_PREFIX}*"
        # The model component's artifacts, components/<name>/<version>/model.onnx: the only model copies
        # devices can read (the token-exchange role in parts/fleet.py reads components/* and nothing else).
        model_artifact_keys = f"{COMPONENTS_PREFIX}{MODEL_COMPONENT_NAME}/*"
        readable_keys = [model_keys, model_artifact_keys, TRAINING_MODEL_WILDCARD]
        models, model_artifacts, training_models = (model_store.object_arn(keys) for keys in readable_keys)
        model_component = greengrass_arn(f"components:{MODEL_COMPONENT_NAME}")
        model_versions = f"{model_component}:versions:*"
        # Promotion from the canary group to the fleet uses the same function, so both groups are in scope.
        grants = DeploymentGrants(groups=(fleet.canary_group.attr_arn, fleet.fleet_group.attr_arn))

        statements = [
            # Read the announced model; write the version-addressed copy of a SageMaker model.tar.gz's ONNX.
            iam.PolicyStatement(
                sid="ModelObjects", actions=["s3:GetObject", "s3:PutObject"], resources=[models]
            ),
            # Write a released model's write-once artifact; read it back to compare on a conflict.
            iam.PolicyStatement(
                sid="ModelComponentArtifacts",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[model_artifacts],
            ),
            # The model.tar.gz a completed training job's event names (read only: it is SageMaker's).
            iam.PolicyStatement(
                sid="TrainingJobModels", actions=["s3:GetObject"], resources=[training_models]
            ),
            # Without ListBucket, S3 answers a read of a missing key with 403 AccessDenied instead of 404,
            # and ModelNotFoundError never fires. S3 checks it with the requested key as s3:prefix, so the
            # listing is limited to the key patterns this role may read anyway.
            iam.PolicyStatement(
                sid="ListReadableKeys",
                actions=["s3:ListBucket"],
                resources=[model_store.bucket_arn],
                conditions={"StringLike": {"s3:prefix": readable_keys}},
            ),
            iam.PolicyStatement(
                sid="ModelStoreKey",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[model_store.key.key_arn],
            ),
            iam.PolicyStatement(
                sid="ModelComponent",
                actions=["greengrass:CreateComponentVersion", "greengrass:ListComponentVersions"],
                resources=[model_component],
            ),
            # Only the model component's versions: the inference component's version comes from config
            # and is pinned in deployments without reading it.
            iam.PolicyStatement(
                sid="ComponentVersions",
                actions=["greengrass:DescribeComponent", "greengrass:GetComponent"],
                resources=[model_versions],
            ),
            *grants.statements(),
            # The lineage registry (lambdas/lifecycle/registry.py): item reads and writes and per-model /
            # per-target queries on the table; it has no index. Transactions authorize as Put/Update.
            iam.PolicyStatement(
                sid="LineageRegistry",
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
                resources=[lineage.table.table_arn],
            ),
            # DynamoDB decrypts the table key as the caller; it never calls kms:Encrypt for a caller (its
            # grant holds Encrypt for the service itself).
            iam.PolicyStatement(
                sid="LineageKey",
                actions=["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
                resources=[lineage.key.key_arn],
            ),
        ]
        policy = iam.Policy(self, "PublisherPolicy", statements=statements)
        policy.attach_to_role(self.publisher.role)

        for resource, reason in (
            (
                models,
                "Models are version-addressed under models/<name>/<version>/; the prefix is the boundary.",
            ),
            (
                model_artifacts,
                "Artifacts are version-addressed under components/<model component>/<version>/; "
                "the one component's prefix is the boundary.",
            ),
            (
                training_models,
                "Job names are minted per training run; only each job's output/model.tar.gz is readable.",
            ),
            (model_versions, "Every version of the one model component; versions are minted per model."),
        ):
            nag.acknowledge(policy, nag.wildcard_resource(self, resource), reason)
        grants.acknowledge_wildcards(policy)

        acknowledge_lambda_defaults(self.publisher.role)

        CfnOutput(self, "PublisherFunctionName", value=self.publisher.function.function_name)
        CfnOutput(self, "PublisherDeadLetterQueueUrl", value=self.publisher.dead_letter_queue.queue_url)
