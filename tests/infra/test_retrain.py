"""The retraining trigger: the retrain queue's consumer, its image, its least-privilege role."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from tests.infra.conftest import Synthesized, as_list, flatten, policy_statements

TRAINING_JOB = "arn:{AWS::Partition}:sagemaker:{AWS::Region}:{AWS::AccountId}:training-job"
SAGEMAKER_JOBS = f"{TRAINING_JOB}/edgeml-dev-*"
# lambdas.retrain.core.job_name's shape: never a job of an environment named edgeml-dev-<something>.
OWN_JOBS = f"{TRAINING_JOB}/edgeml-dev-drift-????????-??????"


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("monitoring")


def _function(template: Template) -> tuple[str, dict[str, Any]]:
    functions = template.find_resources("AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}})
    assert len(functions) == 1
    logical_id, function = next(iter(functions.items()))
    return logical_id, function["Properties"]


def _retrain_queue(template: Template) -> str:
    queue = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule", {"Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [queue, "Arn"]}})]}
    )
    return queue.as_string()


def test_the_function_consumes_the_retrain_queue_one_message_per_invocation(template: Template) -> None:
    function, _ = _function(template)
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": {"Ref": function},
            "EventSourceArn": {"Fn::GetAtt": [_retrain_queue(template), "Arn"]},
            "BatchSize": 1,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )


def test_the_event_source_never_invokes_more_copies_than_the_function_may_run(template: Template) -> None:
    # An SQS event source ignores reserved concurrency; a throttled invoke still counts as a receive.
    function, props = _function(template)
    mapping = Capture()
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"FunctionName": {"Ref": function}, "ScalingConfig": mapping}
    )
    assert mapping.as_object() == {"MaximumConcurrency": 2}
    assert props["ReservedConcurrentExecutions"] == 2


def test_function_is_a_single_traced_image_with_its_settings(template: Template) -> None:
    _, function = _function(template)
    assert function["ReservedConcurrentExecutions"] == 2
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Timeout"] == 60
    variables = {name: flatten(value) for name, value in function["Environment"]["Variables"].items()}
    role_arn = variables.pop("TRAINING_ROLE_ARN")
    assert role_arn.startswith("{import:EdgemlDevTraining:ExportsOutputFnGetAttTrainingRole")
    key_arn = variables.pop("MODEL_STORE_KEY_ARN")
    assert key_arn.startswith("{import:EdgemlDevModelStore:ExportsOutputFnGetAttModelStoreKey")
    assert variables == {
        "JOB_NAME_PREFIX": "edgeml-dev",
        "MODEL_STORE_BUCKET": "edgeml-dev-models-{AWS::AccountId}-{AWS::Region}",
        "RETRAIN_DATASET": "nab",
        "RETRAIN_MODEL_NAME": "anomaly-detector",
        "RETRAIN_INSTANCE_TYPE": "ml.m5.large",
        "RETRAIN_COOLDOWN_HOURS": "24",
    }


def test_failed_messages_go_to_the_retrain_dead_letter_queue_after_five_receives(template: Template) -> None:
    queue = template.find_resources("AWS::SQS::Queue")[_retrain_queue(template)]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert queue["SqsManagedSseEnabled"] is True


def test_role_may_start_only_this_environments_jobs_and_pass_only_the_training_role(
    template: Template,
) -> None:
    statements = policy_statements(template, "RetrainPolicy")
    got = {
        sid: (as_list(s["Action"]), [flatten(r) for r in as_list(s["Resource"])], s.get("Condition"))
        for sid, s in statements.items()
    }
    pass_role = got.pop("PassTrainingRole")
    assert got == {
        "CreateTrainingJobs": (["sagemaker:CreateTrainingJob"], [OWN_JOBS], None),
        # Tags in a create request need AddTags on the new job; only this function's jobs get it.
        "TagCreatedTrainingJobs": (["sagemaker:AddTags"], [OWN_JOBS], None),
        "DescribeTrainingJobs": (["sagemaker:DescribeTrainingJob"], [SAGEMAKER_JOBS], None),
        # The template's tags, copied into the new job.
        "ReadTemplateJobTags": (["sagemaker:ListTags"], [SAGEMAKER_JOBS], None),
        # No resource-level permissions exist for listing.
        "ListTrainingJobs": (["sagemaker:ListTrainingJobs"], ["*"], None),
    }
    actions, resources, condition = pass_role
    assert actions == ["iam:PassRole"]
    [resource] = resources
    assert resource.startswith("{import:EdgemlDevTraining:ExportsOutputFnGetAttTrainingRole")
    assert condition == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_role_defaults_only_consume_the_retrain_queue(template: Template) -> None:
    queue = _retrain_queue(template)
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": Match.string_like_regexp("RetrainRoleDefaultPolicy"),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": Match.array_with(["sqs:ReceiveMessage", "sqs:DeleteMessage"]),
                                "Resource": {"Fn::GetAtt": [queue, "Arn"]},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_the_training_role_is_what_the_function_passes(dev: Synthesized, template: Template) -> None:
    training = dev.template("training")
    roles = training.find_resources(
        "AWS::IAM::Role",
        {
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Statement": [Match.object_like({"Principal": {"Service": "sagemaker.amazonaws.com"}})]
                }
            }
        },
    )
    [role] = roles
    _, function = _function(template)
    assert f"ExportsOutputFnGetAtt{role}Arn" in flatten(
        function["Environment"]["Variables"]["TRAINING_ROLE_ARN"]
    )


def test_prod_cooldown_comes_from_its_context(prod: Synthesized) -> None:
    _, function = _function(prod.template("monitoring"))
    assert function["Environment"]["Variables"]["RETRAIN_COOLDOWN_HOURS"] == "72"
    assert function["Environment"]["Variables"]["JOB_NAME_PREFIX"] == "edgeml-prod"


def test_create_pattern_matches_exactly_the_names_the_function_makes() -> None:
    """IAM's ? is one character: the pattern is job_name's shape and no other environment's job."""
    from fnmatch import fnmatchcase

    from lambdas.retrain.core import AlarmEvent, job_name
    from tests.lambdas.retrain.helpers import utc

    pattern = OWN_JOBS.rsplit("/", 1)[1]
    alarm = AlarmEvent("a", "ALARM", utc("2026-11-24T20:40:05+00:00"), "")
    assert fnmatchcase(job_name("edgeml-dev", alarm), pattern)
    for other in ("edgeml-dev-drift-drift-20261124-204005", "edgeml-dev-train-20261124204005"):
        assert not fnmatchcase(other, pattern), other


def test_the_model_store_key_reaches_the_function_when_given() -> None:
    from aws_cdk import App, RemovalPolicy, Stack
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_logs as logs
    from aws_cdk import aws_sqs as sqs

    from app import LAMBDAS_DIRECTORY
    from infra.parts.retrain import RetrainTrigger

    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    stack = Stack(App(), "Retrain")
    RetrainTrigger(
        stack,
        "Retrain",
        name_prefix="edgeml-dev",
        code_directory=str(LAMBDAS_DIRECTORY),
        queue=sqs.Queue(stack, "Queue"),
        training_role=iam.Role.from_role_arn(stack, "Training", "arn:aws:iam::123456789012:role/training"),
        model_store_bucket_name="edgeml-dev-models",
        dataset="nab",
        model_name="anomaly-detector",
        instance_type="ml.m5.large",
        cooldown_hours=24,
        log_retention=logs.RetentionDays.ONE_WEEK,
        removal_policy=RemovalPolicy.DESTROY,
        model_store_key_arn=key,
    )
    _, function = _function(Template.from_stack(stack))
    assert function["Environment"]["Variables"]["MODEL_STORE_KEY_ARN"] == key
