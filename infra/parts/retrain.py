"""The retraining trigger: the retrain queue → a Lambda that starts one SageMaker training job per episode.

The function (``lambdas/retrain``) reads one message per invocation (batch size 1) and reports a failed
message as a partial batch failure; after ``RETRAIN_MAX_RECEIVES`` receives the queue moves it to its
dead-letter queue, which is therefore the function's DLQ (``infra/parts/drift.py``). Lambda's
asynchronous-invoke settings do not apply: only the SQS event source invokes it.

Concurrency: the SQS event source does not look at reserved concurrency; it invokes as many copies as it
likes, and a throttled invoke puts the message back on the queue with its receive count raised, so with
reserved concurrency 1 two alarms at once could dead-letter a request nobody processed. The event
source's maximum concurrency is therefore set, at 2 (the least Lambda allows), and the reserved
concurrency equals it, so the poller is never throttled. Two requests can then run at once: the job
name (one per alarm episode) and the cooldown check keep that to one job in all but one case, two
different alarms handled in the same few seconds, which can start two jobs (see docs/operations.md).

Least privilege: create only jobs named like this function's (``<prefix>-drift-<date>-<time>``, so
never a job of an environment whose prefix merely starts with this one's), and tag only those (the
template's tags go into the create request, which IAM authorizes as ``sagemaker:AddTags``); describe
and read the tags of ``<prefix>-*`` jobs; list training jobs (an action without resource-level
permissions); and pass the training role, and only to SageMaker. With ``model_store_key_arn`` the
jobs' output is encrypted with the model store's key: SageMaker uses it as the training role, which may
(infra/parts/training_role.py); this function only names it, and the template's volume key, and gets
no KMS permission.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.parts.common import AsyncInvoke, container_function, function_identity
from lambdas.retrain.config import (
    ENV_COOLDOWN_HOURS,
    ENV_DATASET,
    ENV_INSTANCE_TYPE,
    ENV_JOB_NAME_PREFIX,
    ENV_MODEL_NAME,
    ENV_MODEL_STORE_BUCKET,
    ENV_MODEL_STORE_KEY_ARN,
    ENV_TRAINING_ROLE_ARN,
)
from lambdas.retrain.core import JOB_NAME_INFIX

RETRAIN_DOCKERFILE = "retrain/Dockerfile"
# A few SageMaker calls; the queue's visibility timeout is six times this.
RETRAIN_TIMEOUT = Duration.minutes(1)
RETRAIN_MEMORY_MB = 256
# The least maximum concurrency an SQS event source accepts; the reserved concurrency matches it so that
# the event source is never throttled (module docstring).
MAX_CONCURRENCY = 2
RESERVED_CONCURRENCY = MAX_CONCURRENCY


class RetrainTrigger(Construct):
    """Attributes: ``function``, ``role``, ``log_group``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        name_prefix: str,
        code_directory: str,
        queue: sqs.IQueue,
        training_role: iam.IRole,
        model_store_bucket_name: str,
        dataset: str,
        model_name: str,
        instance_type: str,
        cooldown_hours: int,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        model_store_key_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id_)
        identity = function_identity(
            self,
            description=f"{name_prefix}: start a SageMaker training job when a drift alarm fires",
            log_retention=log_retention,
            removal_policy=removal_policy,
        )
        self.log_group, self.role = identity.log_group, identity.role
        job_arn = f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:training-job"
        jobs = f"{job_arn}/{name_prefix}-*"
        # lambdas.retrain.core.job_name's exact shape, YYYYmmdd-HHMMSS as IAM's one-character wildcards
        # (which cdk-nag's wildcard rule, looking for '*', does not report).
        own_jobs = f"{job_arn}/{name_prefix}-{JOB_NAME_INFIX}-????????-??????"
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="CreateTrainingJobs", actions=["sagemaker:CreateTrainingJob"], resources=[own_jobs]
                ),
                # The template's tags (the launcher's --tag) go into CreateTrainingJob's request.
                iam.PolicyStatement(
                    sid="TagCreatedTrainingJobs", actions=["sagemaker:AddTags"], resources=[own_jobs]
                ),
                # The episode's own job (is it there already?) and the template jobs, launcher runs.
                iam.PolicyStatement(
                    sid="DescribeTrainingJobs", actions=["sagemaker:DescribeTrainingJob"], resources=[jobs]
                ),
                iam.PolicyStatement(
                    sid="ReadTemplateJobTags", actions=["sagemaker:ListTags"], resources=[jobs]
                ),
                iam.PolicyStatement(
                    sid="ListTrainingJobs", actions=["sagemaker:ListTrainingJobs"], resources=["*"]
                ),
                iam.PolicyStatement(
                    sid="PassTrainingRole",
                    actions=["iam:PassRole"],
                    resources=[training_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                ),
            ],
        )
        policy.attach_to_role(self.role)
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, jobs),
            "Describe and read tags only: the launcher's jobs (templates) and this function's; the prefix "
            "bounds them.",
        )
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, "*"),
            "sagemaker:ListTrainingJobs has no resource-level permissions; the code filters by prefix.",
        )
        environment = {
            ENV_JOB_NAME_PREFIX: name_prefix,
            ENV_TRAINING_ROLE_ARN: training_role.role_arn,
            ENV_MODEL_STORE_BUCKET: model_store_bucket_name,
            ENV_DATASET: dataset,
            ENV_MODEL_NAME: model_name,
            ENV_INSTANCE_TYPE: instance_type,
            ENV_COOLDOWN_HOURS: str(cooldown_hours),
        }
        if model_store_key_arn is not None:
            environment[ENV_MODEL_STORE_KEY_ARN] = model_store_key_arn
        self.function = container_function(
            self,
            identity=identity,
            code_directory=code_directory,
            dockerfile=RETRAIN_DOCKERFILE,
            environment=environment,
            memory_size=RETRAIN_MEMORY_MB,
            timeout=RETRAIN_TIMEOUT,
            reserved_concurrency=RESERVED_CONCURRENCY,
            # Only the SQS event source invokes the function; see the module docstring.
            invoke=AsyncInvoke(retry_attempts=0, max_event_age=Duration.minutes(1)),
        )
        self.function.add_event_source(
            event_sources.SqsEventSource(
                queue, batch_size=1, max_concurrency=MAX_CONCURRENCY, report_batch_item_failures=True
            )
        )
