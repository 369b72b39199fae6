"""Alarms on publisher errors and DLQ depth, notifying a KMS-encrypted, TLS-only topic."""

from __future__ import annotations

import pytest
from aws_cdk import App, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Capture, Match, Template

from infra.parts.monitoring import Monitoring
from tests.infra.conftest import Synthesized


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("monitoring")


def test_topic_encrypted_with_rotating_key_cloudwatch_can_use(template: Template) -> None:
    key = Capture()
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}})
    key_resource = template.find_resources("AWS::KMS::Key")[key.as_string()]["Properties"]
    assert key_resource["EnableKeyRotation"] is True
    grants = [
        s
        for s in key_resource["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(grants) == 1
    assert grants[0]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]


def test_topic_policy_denies_plain_http(template: Template) -> None:
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sns:Publish",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_publisher_errors_alarm(template: Template) -> None:
    topic = Capture()
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Statistic": "Sum",
            "Period": 300,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": topic}],
            "OKActions": [{"Ref": topic}],
        },
    )
    assert topic.as_string() in template.find_resources("AWS::SNS::Topic")


def test_dead_letter_depth_alarm(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Statistic": "Maximum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Dimensions": [
                {"Name": "QueueName", "Value": {"Fn::ImportValue": Match.string_like_regexp("DeadLetter")}}
            ],
        },
    )


def test_no_email_subscription_without_an_address(template: Template) -> None:
    assert template.find_resources("AWS::SNS::Subscription") == {}


def test_alert_email_subscribes_to_the_topic() -> None:
    # The construct alone, with stand-in function and queue: no image asset, so this synthesizes quickly.
    app = App()
    stack = Stack(app, "AlertEmail")
    function = lambda_.Function(
        stack,
        "Fn",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return None\n"),
    )
    queue = sqs.Queue(stack, "Dlq")
    Monitoring(
        stack,
        "Monitoring",
        name_prefix="edgeml-test",
        publisher_function=function,
        dead_letter_queue=queue,
        alert_email="ops@example.com",
        removal_policy=RemovalPolicy.DESTROY,
    )
    template = Template.from_stack(stack)
    topic = Capture()
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": topic}},
    )
    assert topic.as_string() in template.find_resources("AWS::SNS::Topic")


def test_ack_failures_alarm_watches_the_ingest_metric_for_15_minutes(template: Template) -> None:
    """Devices in ack mode resend every event while acks fail: a sustained failure pages someone."""
    topic = Capture()
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "EdgeML/edgeml-dev",
            "MetricName": "AckPublishFailures",
            "Statistic": "Sum",
            "Period": 300,
            "EvaluationPeriods": 3,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": topic}],
        },
    )
    assert topic.as_string() in template.find_resources("AWS::SNS::Topic")


def test_lifecycle_needs_attention_alarm_watches_the_scheduled_check_s_metric(template: Template) -> None:
    """A state the scheduled check cannot resolve pages someone after one run, and clears after one."""
    topic = Capture()
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "EdgeML/edgeml-dev",
            "MetricName": "LifecycleNeedsAttention",
            "Dimensions": Match.absent(),
            "Statistic": "Maximum",
            "Period": 300,  # the dev schedule's interval: one run per period
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmDescription": Match.string_like_regexp("cannot resolve by itself"),
            "AlarmActions": [{"Ref": topic}],
            "OKActions": [{"Ref": topic}],
        },
    )
    assert topic.as_string() in template.find_resources("AWS::SNS::Topic")
