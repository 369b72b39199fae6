"""The model-lifecycle Lambda: the publisher's image with its own command, environment, concurrency 1,
schedule, dead-letter queue, exact IAM (including the ingest events table) and its alarms."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from infra.config import read_cdk_json_context, select_environment
from infra.stacks.lifecycle_stack import policy_environment
from lambdas.lifecycle.config import load_config
from tests.infra.conftest import (
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
from tests.infra.test_config import CDK_JSON

HANDLER = "lambdas.lifecycle.handler.handler"


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("lifecycle")


@pytest.fixture(scope="module")
def function(template: Template) -> dict[str, Any]:
    return only_function(template)


@pytest.fixture(scope="module")
def statements(template: Template) -> dict[str, dict[str, Any]]:
    return policy_statements(template, "LifecyclePolicy")


def test_runs_the_publisher_image_with_the_lifecycle_command(dev: Synthesized, template: Template) -> None:
    image = Capture()
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "Code": {"ImageUri": {"Fn::Sub": image}},
            "ImageConfig": {"Command": [HANDLER]},
            "Architectures": ["x86_64"],
        },
    )
    publisher = dev.template("publisher").find_resources("AWS::Lambda::Function")
    publisher_image = next(iter(publisher.values()))["Properties"]["Code"]["ImageUri"]["Fn::Sub"]
    # Same asset hash: one image is built and pushed for both functions.
    assert image.as_string() == publisher_image
    # The staged Dockerfile really puts the lifecycle package where the command expects it.
    staged = dev.outdir / f"asset.{image.as_string().rsplit(':', 1)[1]}"
    assert (staged / "lifecycle" / "handler.py").is_file()
    assert "COPY lifecycle/ ${LAMBDA_TASK_ROOT}/lambdas/lifecycle/" in (
        staged / "publisher" / "Dockerfile"
    ).read_text(encoding="utf-8")


def test_one_run_at_a_time_traced_and_bounded(function: dict[str, Any]) -> None:
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Timeout"] == 120
    assert function["Timeout"] < 5 * 60  # a run ends before the next tick


def test_environment(function: dict[str, Any]) -> None:
    variables = function["Environment"]["Variables"]
    assert set(variables) == {
        "MODEL_BUCKET",
        "INFERENCE_COMPONENT_VERSION",
        "TARGET_THING_GROUP_ARN",
        "MODEL_COMPONENT_NAME",
        "INFERENCE_COMPONENT_NAME",
        "LINEAGE_TABLE",
        "CANARY_THING_GROUP_ARN",
        "FLEET_THING_GROUP_ARN",
        "EVENTS_TABLE",
        "AUTO_ROLLBACK",
        "METRICS_NAMESPACE",
    }
    assert flatten(variables["MODEL_BUCKET"]) == BUCKET_NAME
    assert variables["INFERENCE_COMPONENT_VERSION"] == "1.0.0"
    assert variables["MODEL_COMPONENT_NAME"] == "com.edgeml.AnomalyModel"
    assert variables["INFERENCE_COMPONENT_NAME"] == "com.edgeml.AnomalyDetector"
    assert variables["AUTO_ROLLBACK"] == "true"  # dev
    canary = flatten(variables["CANARY_THING_GROUP_ARN"])
    assert canary.startswith("{import:EdgemlDevFleet:")
    assert "CanaryGroup" in canary
    assert flatten(variables["TARGET_THING_GROUP_ARN"]) == canary
    assert "FleetGroup" in flatten(variables["FLEET_THING_GROUP_ARN"])
    assert "LineageTable" in flatten(variables["LINEAGE_TABLE"])
    events = flatten(variables["EVENTS_TABLE"])
    assert events.startswith("{import:EdgemlDevIngest:")
    assert "EventsTable" in events
    # Without POWERTOOLS_SERVICE_NAME: powertools would add a "service" dimension to the EMF line, and the
    # LifecycleNeedsAttention alarm (no dimensions) would never see the metric.
    assert "POWERTOOLS_SERVICE_NAME" not in variables


def test_needs_attention_metric_goes_to_the_ingest_function_s_namespace(
    dev: Synthesized, function: dict[str, Any]
) -> None:
    """The namespace the LifecycleNeedsAttention alarm watches (tests/infra/test_monitoring.py)."""
    namespace = function["Environment"]["Variables"]["METRICS_NAMESPACE"]
    (ingest,) = (
        dev.template("ingest")
        .find_resources("AWS::Lambda::Function", {"Properties": {"PackageType": "Image"}})
        .values()
    )
    assert namespace == ingest["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"]
    assert namespace == "EdgeML/edgeml-dev"


def test_environment_is_one_the_lifecycle_accepts(function: dict[str, Any]) -> None:
    """The same variables with the deploy-time tokens filled in load into the lifecycle's config."""
    arn = "arn:aws:iot:eu-west-1:123456789012:thinggroup/"
    resolved = {
        name: value if isinstance(value, str) else "resolved-at-deploy"
        for name, value in function["Environment"]["Variables"].items()
    }
    resolved |= {
        "CANARY_THING_GROUP_ARN": f"{arn}edgeml-dev-canary",
        "TARGET_THING_GROUP_ARN": f"{arn}edgeml-dev-canary",
        "FLEET_THING_GROUP_ARN": f"{arn}edgeml-dev-fleet",
    }
    config = load_config(resolved)
    assert config.auto_rollback is True
    assert config.events_table == "resolved-at-deploy"
    assert config.canary.name == "edgeml-dev-canary"
    assert config.fleet.name == "edgeml-dev-fleet"


def test_prod_does_not_roll_back_automatically_and_keeps_logs(prod: Synthesized) -> None:
    template = prod.template("lifecycle")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {"Variables": Match.object_like({"AUTO_ROLLBACK": "false"})},
            "ReservedConcurrentExecutions": 1,
        },
    )
    template.has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 365}, "DeletionPolicy": "Retain"}
    )


def test_policy_environment_sets_only_the_configured_policies() -> None:
    context = read_cdk_json_context(CDK_JSON)
    dev = select_environment({**context, "env": "dev"})
    assert policy_environment(dev) == {"AUTO_ROLLBACK": "true"}
    strict = dataclasses.replace(
        dev,
        auto_rollback=False,
        gate_policy_json='{"floors":{},"regression":null}',
        health_policy_json='{"min_windows":10}',
    )
    assert policy_environment(strict) == {
        "AUTO_ROLLBACK": "false",
        "GATE_POLICY": '{"floors":{},"regression":null}',
        "HEALTH_POLICY": '{"min_windows":10}',
    }


def test_failed_runs_are_not_retried_and_go_to_the_dead_letter_queue(template: Template) -> None:
    function_dead_letter_queue(template)
    # The next tick is the retry, and an event older than one interval is superseded by it.
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 300}
    )


def test_log_group_retention(template: Template) -> None:
    assert function_log_group(template)["Properties"]["RetentionInDays"] == 14


def test_schedule_rule_targets_the_function(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(5 minutes)",
            "State": "ENABLED",
            "Targets": [
                {
                    "Arn": {"Fn::GetAtt": [Match.string_like_regexp("^LifecycleFunction"), "Arn"]},
                    "Id": Match.any_value(),
                    "DeadLetterConfig": {
                        "Arn": {"Fn::GetAtt": [Match.string_like_regexp("^LifecycleDeadLetter"), "Arn"]}
                    },
                    "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 300},
                }
            ],
        },
    )
    assert len(template.find_resources("AWS::Events::Rule")) == 1
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [Match.string_like_regexp("^LifecycleSchedule"), "Arn"]},
        },
    )


def test_exact_lifecycle_statements(statements: dict[str, dict[str, Any]]) -> None:
    groups = resources_of(statements["DescribeTargetGroups"])
    assert len(groups) == 2
    assert groups[0].startswith("{import:EdgemlDevFleet:")
    assert "CanaryGroup" in groups[0]
    assert groups[1].startswith("{import:EdgemlDevFleet:")
    assert "FleetGroup" in groups[1]
    expected: dict[str, tuple[list[str], list[str]]] = {
        "ListDeployments": (["greengrass:ListDeployments"], ["*"]),
        "ReadDeployments": (["greengrass:GetDeployment"], [f"{GG}deployments:*"]),
        # No resource type in the SAR: only "*" matches; the target is scoped on iot:CreateJob.
        "CreateDeployment": (["greengrass:CreateDeployment"], ["*"]),
        "CoreDeviceStatus": (
            ["greengrass:ListEffectiveDeployments", "greengrass:ListInstalledComponents"],
            [f"{GG}coreDevices:*"],
        ),
        "DescribeTargetGroups": (["iot:DescribeThingGroup"], groups),
        "CreateDeploymentJobs": (["iot:CreateJob"], [f"{IOT}job/*", *groups]),
        "DeploymentJobs": (["iot:DescribeJob", "iot:UpdateJob", "iot:CancelJob"], [f"{IOT}job/*"]),
        "DeploymentTargetReads": (["iot:DescribeThing", "iot:GetThingShadow"], [f"{IOT}thing/*"]),
        "DeviceJobExecutions": (["iot:DescribeJobExecution"], [f"{IOT}job/*", f"{IOT}thing/*"]),
        "GroupMembers": (["iot:ListThingsInThingGroup"], groups),
        "LineageRegistry": (
            ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            ["{import:EdgemlDevModelStore:ExportsOutputFnGetAttLineageTable"],
        ),
        "LineageKey": (
            ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
            ["{import:EdgemlDevModelStore:ExportsOutputFnGetAttLineageKey"],
        ),
        "Heartbeats": (
            ["dynamodb:Query"],
            ["{import:EdgemlDevIngest:ExportsOutputFnGetAttIngestEventsTable"],
        ),
        "HeartbeatsKey": (
            ["kms:Decrypt", "kms:DescribeKey"],
            ["{import:EdgemlDevIngest:ExportsOutputFnGetAttIngestKey"],
        ),
    }
    assert set(statements) == set(expected)
    for sid, (actions, resources) in expected.items():
        statement = statements[sid]
        assert statement["Effect"] == "Allow", sid
        assert "Condition" not in statement, sid
        assert as_list(statement["Action"]) == actions, sid
        actual = resources_of(statement)
        assert len(actual) == len(resources), sid
        for got, want in zip(actual, resources, strict=True):
            # Cross-stack exports carry a hash suffix; match their stable prefix and attribute.
            assert got == want or (want.startswith("{import:") and got.startswith(want)), (sid, got)


def test_create_deployment_is_granted_on_star_which_its_missing_resource_type_requires(
    template: Template,
) -> None:
    """SAR: greengrass:CreateDeployment has no resource type, so a grant on any ARN never matches it."""
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": Match.string_like_regexp("LifecyclePolicy"),
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


def test_sar_dependent_actions_of_the_device_status_reads_are_granted(
    statements: dict[str, dict[str, Any]],
) -> None:
    """ListEffectiveDeployments depends on DescribeJob, DescribeJobExecution, DescribeThing,
    DescribeThingGroup and GetThingShadow; GetDeployment and ListDeployments on all but the execution."""
    granted: dict[str, list[str]] = {}
    for statement in statements.values():
        for action in as_list(statement["Action"]):
            granted.setdefault(action, []).extend(resources_of(statement))
    assert granted["iot:DescribeJob"] == [f"{IOT}job/*"]
    assert granted["iot:DescribeJobExecution"] == [f"{IOT}job/*", f"{IOT}thing/*"]
    assert granted["iot:DescribeThing"] == [f"{IOT}thing/*"]
    assert granted["iot:GetThingShadow"] == [f"{IOT}thing/*"]
    assert len(granted["iot:DescribeThingGroup"]) == 2
    # Reads only: nothing that changes a thing or its shadow.
    assert not {"iot:UpdateThingShadow", "iot:DeleteThingShadow", "iot:UpdateThing"} & set(granted)


def test_events_table_query_is_the_only_ingest_grant(template: Template) -> None:
    """Heartbeats are read, never written: only Query on the events table (not its index)."""
    heartbeats = Capture()
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "Heartbeats",
                            "Effect": "Allow",
                            "Action": "dynamodb:Query",
                            "Resource": {"Fn::ImportValue": heartbeats},
                        }
                    ]
                )
            }
        },
    )
    export = heartbeats.as_string()
    assert export.startswith("EdgemlDevIngest:ExportsOutputFnGetAttIngestEventsTable")
    text = json.dumps(template.to_json())
    # Nothing else in the stack refers to the events table's ARN (no writes, no index grant).
    assert text.count("ExportsOutputFnGetAttIngestEventsTable") == 1


def test_no_wildcard_actions_and_no_managed_policies(template: Template) -> None:
    assert_no_wildcard_actions(template)
    assert_one_lambda_role_without_managed_policies(template)


def _lifecycle_alarm(monitoring: Template, metric_name: str) -> dict[str, Any]:
    alarms = monitoring.find_resources(
        "AWS::CloudWatch::Alarm",
        {
            "Properties": {
                "MetricName": metric_name,
                "Dimensions": [
                    {"Value": {"Fn::ImportValue": Match.string_like_regexp("^EdgemlDevLifecycle:")}}
                ],
            }
        },
    )
    assert len(alarms) == 1, alarms
    properties: dict[str, Any] = next(iter(alarms.values()))["Properties"]
    return properties


def test_errors_alarm_notifies_the_alarm_topic(dev: Synthesized) -> None:
    monitoring = dev.template("monitoring")
    alarm = _lifecycle_alarm(monitoring, "Errors")
    assert alarm["Namespace"] == "AWS/Lambda"
    (dimension,) = alarm["Dimensions"]
    assert dimension["Name"] == "FunctionName"
    assert dimension["Value"]["Fn::ImportValue"].startswith(
        "EdgemlDevLifecycle:ExportsOutputRefLifecycleFunction"
    )
    # One period per scheduled run: any failed run alarms, the next clean one clears it.
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "Sum",
        300,
        1,
        1,
    )
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    topics = monitoring.find_resources("AWS::SNS::Topic")
    assert alarm["AlarmActions"] == alarm["OKActions"]
    (action,) = alarm["AlarmActions"]
    assert action["Ref"] in topics
    assert action["Ref"].startswith("MonitoringAlarmTopic")


def test_dead_letter_alarm_notifies_the_alarm_topic(dev: Synthesized) -> None:
    monitoring = dev.template("monitoring")
    alarm = _lifecycle_alarm(monitoring, "ApproximateNumberOfMessagesVisible")
    assert alarm["Namespace"] == "AWS/SQS"
    (dimension,) = alarm["Dimensions"]
    assert dimension["Name"] == "QueueName"
    assert dimension["Value"]["Fn::ImportValue"].startswith(
        "EdgemlDevLifecycle:ExportsOutputFnGetAttLifecycleDeadLetterQueue"
    )
    assert alarm["Threshold"] == 1
    (action,) = alarm["AlarmActions"]
    assert action["Ref"].startswith("MonitoringAlarmTopic")
