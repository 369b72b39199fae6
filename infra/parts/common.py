"""Construct builders several parts share: the same encrypted queue, key, bucket, table and container Lambda.

Plain functions, not constructs: each builds its resources directly in the caller's scope, so construct
paths, and with them the CloudFormation logical ids, are what they were when every part wrote its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

# Keep the asset hash (and so the image) stable across machines: caches and tests are not code.
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/.mypy_cache"]
# SQS's maximum: a failed event waits two weeks for a person before it is gone.
QUEUE_RETENTION = Duration.days(14)
ACCESS_LOG_EXPIRATION = Duration.days(365)


def encrypted_queue(
    scope: Construct,
    id_: str,
    *,
    retention_period: Duration = QUEUE_RETENTION,
    dead_letter_queue: sqs.DeadLetterQueue | None = None,
    visibility_timeout: Duration | None = None,
) -> sqs.Queue:
    """An SQS-managed-encrypted queue that refuses non-TLS requests."""
    return sqs.Queue(
        scope,
        id_,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=retention_period,
        dead_letter_queue=dead_letter_queue,
        visibility_timeout=visibility_timeout,
    )


def rotating_key(scope: Construct, id_: str, *, description: str, removal_policy: RemovalPolicy) -> kms.Key:
    """A customer-managed KMS key with yearly rotation."""
    return kms.Key(
        scope, id_, description=description, enable_key_rotation=True, removal_policy=removal_policy
    )


def access_logs_bucket(
    scope: Construct, id_: str, *, removal_policy: RemovalPolicy, auto_delete_objects: bool
) -> s3.Bucket:
    """A private, TLS-only bucket for S3 server access logs, kept a year."""
    # S3 server access logging can only deliver to SSE-S3 buckets, hence S3_MANAGED here.
    return s3.Bucket(
        scope,
        id_,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=removal_policy,
        auto_delete_objects=auto_delete_objects,
        lifecycle_rules=[
            s3.LifecycleRule(
                id="expire-access-logs",
                expiration=ACCESS_LOG_EXPIRATION,
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ],
    )


class KeySchema(Protocol):
    """The part of a table schema (``lambdas/*``'s ``*_TABLE_SCHEMA``) the base table is built from."""

    @property
    def partition_key(self) -> str: ...

    @property
    def sort_key(self) -> str: ...


def encrypted_table(
    scope: Construct,
    id_: str,
    *,
    schema: KeySchema,
    key: kms.IKey,
    removal_policy: RemovalPolicy,
    time_to_live_attribute: str | None = None,
) -> dynamodb.Table:
    """An on-demand table with string keys, encrypted with ``key``, recoverable to any second (PITR)."""
    return dynamodb.Table(
        scope,
        id_,
        partition_key=dynamodb.Attribute(name=schema.partition_key, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=schema.sort_key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=time_to_live_attribute,
        removal_policy=removal_policy,
    )


@dataclass(frozen=True)
class FunctionIdentity:
    """A function's own role and log group, made before the function so grants can precede it."""

    role: iam.Role
    log_group: logs.LogGroup


def function_identity(
    scope: Construct,
    *,
    description: str,
    log_retention: logs.RetentionDays,
    removal_policy: RemovalPolicy,
) -> FunctionIdentity:
    """Log group ``LogGroup`` and role ``Role`` (may write that group and nothing else yet)."""
    log_group = logs.LogGroup(scope, "LogGroup", retention=log_retention, removal_policy=removal_policy)
    # Our own role: no AWSLambdaBasicExecutionRole; the owner grants exactly what the function calls.
    role = iam.Role(
        scope,
        "Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    log_group.grant_write(role)
    return FunctionIdentity(role=role, log_group=log_group)


@dataclass(frozen=True)
class AsyncInvoke:
    """How Lambda handles a failed asynchronous invocation: retries, age limit, where the event goes."""

    retry_attempts: int
    max_event_age: Duration
    dead_letter_queue: sqs.IQueue | None = None
    on_failure: lambda_.IDestination | None = None


@dataclass(frozen=True)
class ImageContexts:
    """Build contexts beyond the code directory, and a hash of the files taken from them.

    CDK hashes only the code directory into the asset; without ``extra_hash`` a change in a file copied
    from another context would not rebuild the image.
    """

    build_contexts: Mapping[str, str]
    extra_hash: str


_NOT_BY_CONTEXT_PATHS = ecr_assets.DockerImageAssetInvalidationOptions(build_contexts=False)


def container_function(
    scope: Construct,
    *,
    identity: FunctionIdentity,
    code_directory: str,
    dockerfile: str,
    environment: dict[str, str],
    memory_size: int,
    timeout: Duration,
    reserved_concurrency: int,
    invoke: AsyncInvoke,
    cmd: list[str] | None = None,
    image: ImageContexts | None = None,
) -> lambda_.DockerImageFunction:
    """``Function``: an x86-64 container image built from ``code_directory``, traced with X-Ray.

    Synth only stages the folder; docker runs at deploy time. ``cmd`` overrides the image's CMD without
    changing the asset's hash, so two functions can share one image. ``image`` adds named build contexts
    (``COPY --from=<name>``) and the hash of what the Dockerfile takes from them.
    """
    return lambda_.DockerImageFunction(
        scope,
        "Function",
        code=lambda_.DockerImageCode.from_image_asset(
            code_directory,
            file=dockerfile,
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=ASSET_EXCLUDES,
            cmd=cmd,
            build_contexts=dict(image.build_contexts) if image is not None else None,
            extra_hash=image.extra_hash if image is not None else None,
            # The contexts are absolute paths: hashing them would make the image depend on where the
            # repository is checked out. What is taken from them is in extra_hash instead.
            invalidation=None if image is None else _NOT_BY_CONTEXT_PATHS,
        ),
        architecture=lambda_.Architecture.X86_64,
        role=identity.role,
        environment=environment,
        memory_size=memory_size,
        timeout=timeout,
        reserved_concurrent_executions=reserved_concurrency,
        dead_letter_queue=invoke.dead_letter_queue,
        retry_attempts=invoke.retry_attempts,
        max_event_age=invoke.max_event_age,
        on_failure=invoke.on_failure,
        tracing=lambda_.Tracing.ACTIVE,
        log_group=identity.log_group,
    )
