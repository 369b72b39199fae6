"""The publisher Lambda: image package, environment, concurrency, DLQ, tracing, triggers, exact IAM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from tests.infra.conftest import Synthesized, flatten

ROOT = Path(__file__).resolve().parents[2]
BUCKET_NAME = "edgeml-dev-models-{AWS::AccountId}-{AWS::Region}"
BUCKET = "arn:{AWS::Partition}:s3:::" + BUCKET_NAME
GG = "arn:{AWS::Partition}:greengrass:{AWS::Region}:{AWS::AccountId}:"
IOT = "arn:{AWS::Partition}:iot:{AWS::Region}:{AWS::AccountId}:"


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("publisher")


@pytest.fixture(scope="module")
def function(template: Template) -> dict[str, Any]:
    functions = template.find_resources("AWS::Lambda::Function")
    assert len(functions) == 1
    properties: dict[str, Any] = next(iter(functions.values()))["Properties"]
    return properties


@pytest.fixture(scope="module")
def statements(template: Template) -> dict[str, dict[str, Any]]:
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"PolicyName": Match.string_like_regexp("PublisherPolicy")}}
    )
    assert len(policies) == 1
    document = next(iter(policies.values()))["Properties"]["PolicyDocument"]
    return {s["Sid"]: s for s in document["Statement"]}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resources(statement: dict[str, Any]) -> list[str]:
    return [flatten(r) for r in _list(statement["Resource"])]


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
    queue = Capture()
    template.has_resource_properties(
        "AWS::Lambda::Function", {"DeadLetterConfig": {"TargetArn": {"Fn::GetAtt": [queue, "Arn"]}}}
    )
    queues = template.find_resources("AWS::SQS::Queue")
    assert list(queues) == [queue.as_string()]
    assert queues[queue.as_string()]["Properties"]["SqsManagedSseEnabled"] is True
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": queue.as_string()}],
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
    group = Capture()
    template.has_resource_properties("AWS::Lambda::Function", {"LoggingConfig": {"LogGroup": {"Ref": group}}})
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert list(groups) == [group.as_string()]
    assert groups[group.as_string()]["Properties"]["RetentionInDays"] == 14
    assert groups[group.as_string()]["DeletionPolicy"] == "Delete"


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
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.sagemaker"],
                "detail-type": ["SageMaker Training Job State Change"],
                "detail": {"TrainingJobStatus": ["Completed"]},
            },
            "Targets": [
                Match.object_like(
                    {"Arn": {"Fn::GetAtt": [Match.string_like_regexp("^PublisherFunction"), "Arn"]}}
                )
            ],
        },
    )


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
        "ModelComponent": (
            ["greengrass:CreateComponentVersion", "greengrass:ListComponentVersions"],
            [f"{GG}components:com.edgeml.AnomalyModel"],
        ),
        "ComponentVersions": (
            ["greengrass:DescribeComponent", "greengrass:GetComponent"],
            [
                f"{GG}components:com.edgeml.AnomalyModel:versions:*",
                f"{GG}components:com.edgeml.AnomalyDetector:versions:*",
            ],
        ),
        "ReadDeployments": (["greengrass:GetDeployment"], [f"{GG}deployments:*"]),
        "ListDeployments": (["greengrass:ListDeployments"], ["*"]),
    }
    for sid, (actions, resources) in expected.items():
        assert _list(statements[sid]["Action"]) == actions, sid
        assert _resources(statements[sid]) == resources, sid
    assert set(statements) == {
        *expected,
        "ModelStoreKey",
        "CreateDeployment",
        "DescribeTargetGroups",
        "DeploymentJobs",
        "LineageRegistry",
        "LineageKey",
    }


def test_deployment_statements_are_scoped_to_the_two_thing_groups(
    statements: dict[str, dict[str, Any]],
) -> None:
    groups = _resources(statements["DescribeTargetGroups"])
    assert len(groups) == 2
    assert "CanaryGroup" in groups[0]
    assert "FleetGroup" in groups[1]
    assert statements["DescribeTargetGroups"]["Action"] == "iot:DescribeThingGroup"

    create = statements["CreateDeployment"]
    assert create["Action"] == "greengrass:CreateDeployment"
    assert _resources(create) == [f"{GG}deployments:*", *groups]

    jobs = statements["DeploymentJobs"]
    assert jobs["Action"] == ["iot:CreateJob", "iot:DescribeJob", "iot:UpdateJob", "iot:CancelJob"]
    assert _resources(jobs) == [f"{IOT}job/*", *groups]

    key = statements["ModelStoreKey"]
    assert key["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "ModelStoreKey" in flatten(key["Resource"])


def test_no_wildcard_actions_anywhere(template: Template) -> None:
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in _list(statement["Action"]):
                assert "*" not in action, statement


def test_function_role_has_no_managed_policies(template: Template) -> None:
    roles = template.find_resources("AWS::IAM::Role")
    assert len(roles) == 1
    role = next(iter(roles.values()))["Properties"]
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"
    }


def test_prod_reserves_more_concurrency_and_keeps_logs(prod: Synthesized) -> None:
    template = prod.template("publisher")
    template.has_resource_properties("AWS::Lambda::Function", {"ReservedConcurrentExecutions": 5})
    template.has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 365}, "DeletionPolicy": "Retain"}
    )
