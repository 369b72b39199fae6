"""The model publisher: a container Lambda (onnxruntime validates models) with its DLQ, logs and triggers.

The function is built from ``lambdas/`` with ``lambdas/publisher/Dockerfile``, plus the inference
component's post-processing parser from ``greengrass_components/`` (a second build context); synth only
stages the folders, docker runs at deploy time. Permissions are added by the stack, which knows the other
units.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.parts.common import (
    AsyncInvoke,
    ImageContexts,
    container_function,
    encrypted_queue,
    function_identity,
)
from infra.parts.model_store import MODELS_PREFIX
from infra.parts.training_role import TRAINING_OUTPUT_PREFIX

MODEL_FILE_NAME = "model.onnx"
# Matches models/<model_name>/<model_version>/model.onnx (contracts §2); '*' spans the two segments.
MODEL_KEY_WILDCARD = f"{MODELS_PREFIX}*/{MODEL_FILE_NAME}"
# SageMaker's model artifact of a training job: <S3OutputPath><job name>/output/model.tar.gz, with the
# output path training-output/ (training/launch_config.py, lambdas/retrain). The TrainingJobCompleted
# event names it and the publisher reads it; nothing else under training-output/.
TRAINING_MODEL_WILDCARD = f"{TRAINING_OUTPUT_PREFIX}*/output/model.tar.gz"
# Publishing waits for the component version to become DEPLOYABLE; a few minutes is ample.
PUBLISHER_TIMEOUT = Duration.minutes(5)
# onnxruntime + numpy + a probe inference on a small model.
PUBLISHER_MEMORY_MB = 1024
# Relative to the code directory (lambdas/); the lifecycle function runs the same image.
PUBLISHER_DOCKERFILE = "publisher/Dockerfile"
# The Dockerfile's `COPY --from=edge` context: the inference component's package, beside lambdas/, whose
# post-processing parser validation.py uses. EDGE_FILES are the files copied from it (relative to it).
EDGE_BUILD_CONTEXT = "edge"
EDGE_DIRECTORY_NAME = "greengrass_components"
EDGE_FILES = (
    "__init__.py",
    "anomaly_detector/__init__.py",
    "anomaly_detector/errors.py",
    "anomaly_detector/postprocess.py",
)


def publisher_image(code_directory: str) -> ImageContexts:
    """The publisher image's second build context, hashed by the files the Dockerfile takes from it."""
    edge = Path(code_directory).resolve().parent / EDGE_DIRECTORY_NAME
    digest = hashlib.sha256()
    for name in EDGE_FILES:
        digest.update(name.encode() + b"\0" + (edge / name).read_bytes())
    return ImageContexts(build_contexts={EDGE_BUILD_CONTEXT: str(edge)}, extra_hash=digest.hexdigest())


def training_job_detail_pattern(model_bucket_name: str) -> dict[str, object]:
    """Completed training jobs whose model artifacts are in this environment's model store.

    SageMaker sends every training job of the account and region to EventBridge; the publisher refuses
    a model outside its bucket, so without this filter each job of another project or environment would
    fail an invocation, be retried into the dead-letter queue and set off the error alarm. The bucket
    (``<namePrefix>-models-<account>-<region>``) names the environment; job names do not (the launcher's
    default prefix is ``edgeml-train`` in every environment).
    """
    return {
        "TrainingJobStatus": ["Completed"],
        "ModelArtifacts": {"S3ModelArtifacts": [{"prefix": f"s3://{model_bucket_name}/"}]},
    }


class Publisher(Construct):
    """Attributes: ``function``, ``role``, ``dead_letter_queue``, ``log_group``, ``s3_rule``,
    ``training_rule``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        code_directory: str,
        environment: dict[str, str],
        model_bucket_name: str,
        reserved_concurrency: int,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        self.dead_letter_queue = encrypted_queue(self, "DeadLetterQueue")
        identity = function_identity(
            self,
            description="Model publisher: validate model, create Greengrass component version, deploy",
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
            environment=environment,
            memory_size=PUBLISHER_MEMORY_MB,
            timeout=PUBLISHER_TIMEOUT,
            reserved_concurrency=reserved_concurrency,
            # EventBridge invokes asynchronously; failed events land in the DLQ after these retries.
            invoke=AsyncInvoke(
                retry_attempts=2, max_event_age=Duration.hours(6), dead_letter_queue=self.dead_letter_queue
            ),
        )

        self.s3_rule = events.Rule(
            self,
            "ModelObjectCreated",
            description="A model.onnx written under models/ in the model store",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [model_bucket_name]},
                    "object": {"key": [{"wildcard": MODEL_KEY_WILDCARD}]},
                },
            ),
        )
        self.training_rule = events.Rule(
            self,
            "TrainingJobCompleted",
            description="A SageMaker training job whose model is in this model store finished successfully",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Training Job State Change"],
                detail=training_job_detail_pattern(model_bucket_name),
            ),
        )
        for rule in (self.s3_rule, self.training_rule):
            rule.add_target(
                targets.LambdaFunction(
                    self.function,
                    # Events EventBridge cannot deliver (throttled, function gone) go to the same DLQ.
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=4,
                    max_event_age=Duration.hours(2),
                )
            )
