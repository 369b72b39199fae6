"""The publisher Lambda: image package, environment, concurrency, DLQ, tracing, triggers, exact IAM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template
from moto.events.models import EventPattern
from moto.events.utils import EventMessageType

from tests.infra.conftest import (
    BUCKET,
    BUCKET_NAME,
    GG,
    IOT,
    Synthesized,
    as_list,
    assert_no_wildcard_actions,
    assert_one_lambda_role_without_managed_policies,
    flatten,
    function_dead_letter_queue,
    function_log_group,
    only_function,
    policy_statements,
    resources_of,
)

ROOT = Path(__file__).resolve().parents[2]
TRAINING_MODELS = f"{BUCKET}/training-output/*/output/model.tar.gz"


def iam_pattern_matches(pattern: str, arn: str) -> bool:
    """IAM resource matching: ``*`` spans any characters (``/`` included), ``?`` is one character."""
    return (
        re.fullmatch(".*".join(".".join(map(re.escape, p.split("?"))) for p in pattern.split("*")), arn)
        is not None
    )


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("publisher")


@pytest.fixture(scope="module")
def function(template: Template) -> dict[str, Any]:
    return only_function(template)


@pytest.fixture(scope="module")
def statements(template: Template) -> dict[str, dict[str, Any]]:
    return policy_statements(template, "PublisherPolicy")


def test_container_image_function(function: dict[str, Any]) -> None:
    assert function["PackageType"] == "Image"
    assert "Runtime" not in function  # the runtime is the image's (python:3.12 base)
    assert function["Architectures"] == ["x86_64"]
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["ReservedConcurrentExecutions"] == 2
    assert function["Timeout"] == 300


def test_dockerfile_builds_the_python312_lambda_image() -> None:
    dockerfile = (ROOT / "lambdas" / "publisher" / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM public.ecr.aws/lambda/python:3.12" in dockerfile
    for pin in ("onnxruntime==1.31.1", "numpy==2.4.6", "boto3==1.44.5", "aws-lambda-powertools==3.37.0"):
        assert pin in dockerfile
    assert 'CMD ["lambdas.publisher.handler.handler"]' in dockerfile


def test_staged_image_asset_contains_the_publisher_package(
    dev: Synthesized, function: dict[str, Any]
) -> None:
    image_tag = function["Code"]["ImageUri"]["Fn::Sub"].rsplit(":", 1)[1]
    staged = dev.outdir / f"asset.{image_tag}"
    assert (staged / "publisher" / "Dockerfile").is_file()
    assert (staged / "publisher" / "handler.py").is_file()
    assert (staged / "__init__.py").is_file()
    assert not list(staged.rglob("__pycache__"))


def test_environment(function: dict[str, Any]) -> None:
    variables = function["Environment"]["Variables"]
    assert set(variables) == {
        "MODEL_BUCKET",
        "MODEL_COMPONENT_NAME",
        "INFERENCE_COMPONENT_NAME",
        "INFERENCE_COMPONENT_VERSION",
        "TARGET_THING_GROUP_ARN",
        "POWERTOOLS_SERVICE_NAME",
        "LINEAGE_TABLE",
        "CANARY_THING_GROUP_ARN",
        "FLEET_THING_GROUP_ARN",
    }
    assert flatten(variables["MODEL_BUCKET"]) == BUCKET_NAME
    assert variables["MODEL_COMPONENT_NAME"] == "com.edgeml.AnomalyModel"
    assert variables["INFERENCE_COMPONENT_NAME"] == "com.edgeml.AnomalyDetector"
    assert variables["INFERENCE_COMPONENT_VERSION"] == "1.0.0"
    assert variables["POWERTOOLS_SERVICE_NAME"] == "model-publisher"
    # dev deploys new models to the canary group first.
    assert "CanaryGroup" in flatten(variables["TARGET_THING_GROUP_ARN"])


def test_dead_letter_queue_is_encrypted_and_tls_only(template: Template) -> None:
    queue = function_dead_letter_queue(template)
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sqs:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_log_group_retention(template: Template) -> None:
    group = function_log_group(template)
    assert group["Properties"]["RetentionInDays"] == 14
    assert group["DeletionPolicy"] == "Delete"


def test_s3_object_created_rule(template: Template) -> None:
    detail = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail},
            "Targets": [
                {
                    "Arn": {"Fn::GetAtt": [Match.string_like_regexp("^PublisherFunction"), "Arn"]},
                    "Id": Match.any_value(),
                    "DeadLetterConfig": {
                        "Arn": {"Fn::GetAtt": [Match.string_like_regexp("^PublisherDeadLetter"), "Arn"]}
                    },
                    "RetryPolicy": {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 7200},
                }
            ],
        },
    )
    pattern = detail.as_object()
    assert [flatten(name) for name in pattern["bucket"]["name"]] == [BUCKET_NAME]
    assert pattern["object"] == {"key": [{"wildcard": "models/*/model.onnx"}]}


def test_training_completed_rule(template: Template) -> None:
    detail = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.sagemaker"],
                "detail-type": ["SageMaker Training Job State Change"],
                "detail": detail,
            },
            "Targets": [
                Match.object_like(
                    {"Arn": {"Fn::GetAtt": [Match.string_like_regexp("^PublisherFunction"), "Arn"]}}
                )
            ],
        },
    )
    pattern = detail.as_object()
    assert pattern["TrainingJobStatus"] == ["Completed"]
    [prefix] = pattern["ModelArtifacts"]["S3ModelArtifacts"]
    assert {key: flatten(value) for key, value in prefix.items()} == {"prefix": f"s3://{BUCKET_NAME}/"}


def _tokens_written_out(value: Any) -> Any:
    """A synthesized value with every ``Fn::Join`` (the bucket name's account and region) as text."""
    if isinstance(value, dict):
        if "Fn::Join" in value:
            return flatten(value)
        return {key: _tokens_written_out(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tokens_written_out(item) for item in value]
    return value


@pytest.mark.parametrize(
    ("artifacts", "matches"),
    [
        (f"s3://{BUCKET_NAME}/training-output/job-1/output/model.tar.gz", True),
        # Another environment's (or project's) bucket, including one whose name merely starts the same.
        ("s3://edgeml-prod-models-123456789012-us-east-1/training-output/job-1/output/model.tar.gz", False),
        (f"s3://{BUCKET_NAME}-copy/training-output/job-1/output/model.tar.gz", False),
        (None, False),
    ],
    ids=["this-model-store", "other-environment", "same-name-prefix", "no-artifacts"],
)
def test_training_rule_matches_only_jobs_whose_model_is_in_this_model_store(
    template: Template, artifacts: str | None, matches: bool
) -> None:
    # moto's EventBridge pattern matcher, on the synthesized pattern with its tokens written out.
    rules = template.find_resources("AWS::Events::Rule")
    [rule] = [r for r in rules.values() if r["Properties"]["EventPattern"]["source"] == ["aws.sagemaker"]]
    pattern = _tokens_written_out(rule["Properties"]["EventPattern"])
    detail: dict[str, Any] = {"TrainingJobName": "job-1", "TrainingJobStatus": "Completed"}
    if artifacts is not None:
        detail["ModelArtifacts"] = {"S3ModelArtifacts": artifacts}
    event: EventMessageType = {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": detail,
    }
    assert EventPattern.load(json.dumps(pattern)).matches_event(event) is matches


def test_eventbridge_may_invoke_and_dead_letter(template: Template) -> None:
    permissions = template.find_resources(
        "AWS::Lambda::Permission", {"Properties": {"Principal": "events.amazonaws.com"}}
    )
    assert len(permissions) == 2
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": "sqs:SendMessage", "Principal": {"Service": "events.amazonaws.com"}}
                        )
                    ]
                )
            }
        },
    )


def test_exact_publisher_statements(statements: dict[str, dict[str, Any]]) -> None:
    expected = {
        "ModelObjects": (["s3:GetObject", "s3:PutObject"], [f"{BUCKET}/models/*"]),
        # Only the model component's own prefix under components/, the one devices read from.
        "ModelComponentArtifacts": (
            ["s3:GetObject", "s3:PutObject"],
            [f"{BUCKET}/components/com.edgeml.AnomalyModel/*"],
        ),
        "TrainingJobModels": (["s3:GetObject"], [TRAINING_MODELS]),
        "ListReadableKeys": (["s3:ListBucket"], [BUCKET]),
        "ModelComponent": (
            ["greengrass:CreateComponentVersion", "greengrass:ListComponentVersions"],
            [f"{GG}components:com.edgeml.AnomalyModel"],
        ),
        # The model component's versions only: the inference component's version is never read.
        "ComponentVersions": (
            ["greengrass:DescribeComponent", "greengrass:GetComponent"],
            [f"{GG}components:com.edgeml.AnomalyModel:versions:*"],
        ),
        "CreateDeployment": (["greengrass:CreateDeployment"], ["*"]),
        "ReadDeployments": (["greengrass:GetDeployment"], [f"{GG}deployments:*"]),
        "ListDeployments": (["greengrass:ListDeployments"], ["*"]),
        "DeploymentJobs": (["iot:DescribeJob", "iot:UpdateJob", "iot:CancelJob"], [f"{IOT}job/*"]),
        "DeploymentTargetReads": (["iot:DescribeThing", "iot:GetThingShadow"], [f"{IOT}thing/*"]),
        "ModelStoreKey": (["kms:Decrypt", "kms:GenerateDataKey"], ["{import:EdgemlDevModelStore:"]),
        "LineageRegistry": (
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
            ["{import:EdgemlDevModelStore:ExportsOutputFnGetAttLineageTable"],
        ),
        "LineageKey": (
            ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
            ["{import:EdgemlDevModelStore:ExportsOutputFnGetAttLineageKey"],
        ),
    }
    for sid, (actions, resources) in expected.items():
        assert as_list(statements[sid]["Action"]) == actions, sid
        actual = resources_of(statements[sid])
        assert len(actual) == len(resources), sid
        for got, want in zip(actual, resources, strict=True):
            # Cross-stack exports carry a hash suffix; match their stable prefix.
            assert got == want or (want.startswith("{import:") and got.startswith(want)), (sid, got)
    assert set(statements) == {*expected, "DescribeTargetGroups", "CreateDeploymentJobs"}
    assert [sid for sid, s in statements.items() if "Condition" in s] == ["ListReadableKeys"]


def test_deployment_statements_are_scoped_to_the_two_thing_groups(
    statements: dict[str, dict[str, Any]],
) -> None:
    groups = resources_of(statements["DescribeTargetGroups"])
    assert len(groups) == 2
    assert "CanaryGroup" in groups[0]
    assert "FleetGroup" in groups[1]
    assert statements["DescribeTargetGroups"]["Action"] == "iot:DescribeThingGroup"

    # The job Greengrass creates for a deployment is where its target is authorized.
    create_jobs = statements["CreateDeploymentJobs"]
    assert create_jobs["Action"] == "iot:CreateJob"
    assert resources_of(create_jobs) == [f"{IOT}job/*", *groups]
    # DescribeJob / UpdateJob / CancelJob take only a job resource: no thing group ARNs beside it.
    assert resources_of(statements["DeploymentJobs"]) == [f"{IOT}job/*"]

    key = statements["ModelStoreKey"]
    assert key["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "ModelStoreKey" in flatten(key["Resource"])


def test_create_deployment_is_granted_on_star_which_its_missing_resource_type_requires(
    template: Template,
) -> None:
    """SAR: greengrass:CreateDeployment has no resource type, so a grant on any ARN never matches it."""
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": Match.string_like_regexp("PublisherPolicy"),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "CreateDeployment",
                            "Effect": "Allow",
                            "Action": "greengrass:CreateDeployment",
                            "Resource": "*",
                        }
                    ]
                )
            },
        },
    )


@pytest.mark.parametrize(
    ("key", "readable"),
    [
        ("training-output/edgeml-train-20260101-000000/output/model.tar.gz", True),
        ("training-output/job-1/output/output.tar.gz", False),
        ("training-output/job-1/checkpoints/model.tar.gz", False),
        ("training-output/job-1/model.tar.gz", False),
        ("datasets/nab/train.csv", False),
    ],
)
def test_publisher_reads_the_model_a_training_job_event_names_and_nothing_else_of_the_job(
    statements: dict[str, dict[str, Any]], key: str, readable: bool
) -> None:
    """SageMaker writes <S3OutputPath><job>/output/model.tar.gz; that object is what the event names."""
    object_arn = f"{BUCKET}/{key}"
    readers = [
        sid
        for sid, s in statements.items()
        if "s3:GetObject" in as_list(s["Action"])
        and any(iam_pattern_matches(pattern, object_arn) for pattern in resources_of(s))
    ]
    assert readers == (["TrainingJobModels"] if readable else [])
    assert statements["TrainingJobModels"]["Action"] == "s3:GetObject"  # read only: SageMaker's object


def test_list_bucket_is_limited_to_the_key_patterns_the_publisher_reads(template: Template) -> None:
    """With s3:ListBucket a missing key is a 404 (ModelNotFoundError), not 403; S3 checks the requested
    key as ``s3:prefix``, so the condition lists exactly the patterns the role may already GetObject."""
    prefixes = Capture()
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": Match.string_like_regexp("PublisherPolicy"),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "ListReadableKeys",
                            "Effect": "Allow",
                            "Action": "s3:ListBucket",
                            "Resource": Match.any_value(),
                            "Condition": {"StringLike": {"s3:prefix": prefixes}},
                        }
                    ]
                )
            },
        },
    )
    assert prefixes.as_array() == [
        "models/*",
        "components/com.edgeml.AnomalyModel/*",
        "training-output/*/output/model.tar.gz",
    ]


def test_list_bucket_is_on_the_bucket_and_mirrors_the_object_reads(
    statements: dict[str, dict[str, Any]],
) -> None:
    listing = statements["ListReadableKeys"]
    assert resources_of(listing) == [BUCKET]
    readable = [
        resource.removeprefix(f"{BUCKET}/")
        for s in statements.values()
        if "s3:GetObject" in as_list(s["Action"])
        for resource in resources_of(s)
    ]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == readable


def test_greengrass_read_dependencies_are_read_only_on_things_and_jobs(
    statements: dict[str, dict[str, Any]],
) -> None:
    """The SAR's dependent actions of GetDeployment / ListDeployments: DescribeJob, DescribeThing,
    DescribeThingGroup, GetThingShadow."""
    granted = {action: resources_of(s) for s in statements.values() for action in as_list(s["Action"])}
    assert granted["iot:DescribeJob"] == [f"{IOT}job/*"]
    assert granted["iot:DescribeThing"] == [f"{IOT}thing/*"]
    assert granted["iot:GetThingShadow"] == [f"{IOT}thing/*"]
    assert len(granted["iot:DescribeThingGroup"]) == 2
    # Reads only: no shadow writes (single-thing targets are not used).
    assert not {"iot:UpdateThingShadow", "iot:DeleteThingShadow"} & set(granted)


def test_lineage_key_grants_no_encrypt(statements: dict[str, dict[str, Any]]) -> None:
    """DynamoDB calls kms:Decrypt (the table key) as the caller, never kms:Encrypt."""
    assert "kms:Encrypt" not in as_list(statements["LineageKey"]["Action"])


def test_no_wildcard_actions_anywhere(template: Template) -> None:
    assert_no_wildcard_actions(template)


def test_function_role_has_no_managed_policies(template: Template) -> None:
    assert_one_lambda_role_without_managed_policies(template)


def test_prod_reserves_more_concurrency_and_keeps_logs(prod: Synthesized) -> None:
    template = prod.template("publisher")
    template.has_resource_properties("AWS::Lambda::Function", {"ReservedConcurrentExecutions": 5})
    template.has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 365}, "DeletionPolicy": "Retain"}
    )
