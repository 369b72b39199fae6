"""The model store: one versioned, KMS-encrypted bucket for datasets, models and component artifacts."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import nag
from infra.parts.common import access_logs_bucket, rotating_key

# docs/contracts.md §2: the three top-level prefixes of the model store.
DATASETS_PREFIX = "datasets/"
MODELS_PREFIX = "models/"
COMPONENTS_PREFIX = "components/"
# Construct id prefix of the singleton custom resource CDK adds for bucket notifications.
_NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler"


def model_store_bucket_name(name_prefix: str) -> str:
    """A name other stacks can compute without importing it: prefix, account and region make it unique.

    Deterministic names keep the policies that reference ``<bucket>/models/*`` free of cross-stack
    imports, so their cdk-nag findings have stable ids.
    """
    return f"{name_prefix}-models-{Aws.ACCOUNT_ID}-{Aws.REGION}"


class ModelStore(Construct):
    """Bucket + customer-managed key + access-log bucket.

    Attributes: ``bucket``, ``key``, ``access_logs_bucket``, ``bucket_name``.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        name_prefix: str,
        removal_policy: RemovalPolicy,
        auto_delete_objects: bool,
        noncurrent_version_expiration: Duration,
    ) -> None:
        super().__init__(scope, id_)
        self.bucket_name = model_store_bucket_name(name_prefix)

        self.key = rotating_key(
            self,
            "Key",
            description=f"{name_prefix} model store: datasets, models, component artifacts",
            removal_policy=removal_policy,
        )
        self.access_logs_bucket = access_logs_bucket(
            self, "AccessLogs", removal_policy=removal_policy, auto_delete_objects=auto_delete_objects
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=self.bucket_name,
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="model-store/",
            # ObjectCreated events drive the publisher through EventBridge rules (no bucket-side targets).
            event_bridge_enabled=True,
            removal_policy=removal_policy,
            auto_delete_objects=auto_delete_objects,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    # Keys are written once (contract §2), so noncurrent versions only come from mistakes.
                    noncurrent_version_expiration=noncurrent_version_expiration,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )
        # event_bridge_enabled is applied by a CDK-provided custom resource (one per stack).
        stack = Stack.of(self)
        handlers = [c for c in stack.node.children if c.node.id.startswith(_NOTIFICATIONS_HANDLER_ID)]
        for handler in handlers:
            nag.acknowledge(
                handler,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaBasicExecutionRole]",
                "CDK's bucket-notifications handler only writes its own logs with this policy; not our code.",
            )

    @property
    def bucket_arn(self) -> str:
        """The bucket's ARN built from its deterministic name: usable from any stack without an import."""
        return f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}"

    def object_arn(self, pattern: str) -> str:
        """ARN of the objects matching ``pattern`` (e.g. ``models/*``)."""
        return f"{self.bucket_arn}/{pattern}"
