"""The drift alarms, the retraining request they queue, and the alarms on the ingest path's failure sinks."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from tests.infra.conftest import Synthesized


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("monitoring")


def _alarm_topic(template: Template) -> str:
    (topic,) = template.find_resources("AWS::SNS::Topic")
    return topic


def _drift_alarm(template: Template, metric: str = "HeartbeatAnomalyRate") -> tuple[str, dict[str, Any]]:
    alarms = template.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"MetricName": metric}})
    assert len(alarms) == 1
    logical_id, alarm = next(iter(alarms.items()))
    return logical_id, alarm["Properties"]


def test_drift_alarm_on_the_fleet_anomaly_rate(template: Template) -> None:
    _, alarm = _drift_alarm(template)
    topic = _alarm_topic(template)
    assert alarm["Namespace"] == "EdgeML/edgeml-dev"
    assert alarm["Statistic"] == "Average"
    assert alarm["Period"] == 900
    assert alarm["Threshold"] == 0.05
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["EvaluationPeriods"] == 4
    assert alarm["DatapointsToAlarm"] == 4
    assert alarm["TreatMissingData"] == "notBreaching"
    # The IoT metric action sets no dimensions; a dimensioned alarm would never see a datapoint.
    assert "Dimensions" not in alarm
    assert alarm["AlarmActions"] == [{"Ref": topic}]
    assert alarm["OKActions"] == [{"Ref": topic}]


def test_drift_namespace_is_the_one_the_ingest_rule_writes(dev: Synthesized, template: Template) -> None:
    _, alarm = _drift_alarm(template)
    ingest = dev.template("ingest")
    rules = ingest.find_resources("AWS::IoT::TopicRule")
    metric_actions = [
        action["CloudwatchMetric"]
        for rule in rules.values()
        for action in rule["Properties"]["TopicRulePayload"]["Actions"]
        if "CloudwatchMetric" in action
    ]
    assert [(m["MetricNamespace"], m["MetricName"]) for m in metric_actions] == [
        (alarm["Namespace"], alarm["MetricName"])
    ]


@pytest.mark.parametrize(("metric", "threshold"), [("HeartbeatScorePsi", 0.25), ("HeartbeatInputShift", 3.0)])
def test_drift_against_training_alarms(template: Template, metric: str, threshold: float) -> None:
    _, alarm = _drift_alarm(template, metric)
    topic = _alarm_topic(template)
    assert alarm["Namespace"] == "EdgeML/edgeml-dev"
    assert (alarm["Statistic"], alarm["Period"]) == ("Average", 900)
    assert alarm["Threshold"] == threshold
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (4, 4)
    assert alarm["TreatMissingData"] == "notBreaching"
    # The ingest function writes its EMF lines without dimensions.
    assert "Dimensions" not in alarm
    assert alarm["AlarmActions"] == [{"Ref": topic}]
    assert alarm["OKActions"] == [{"Ref": topic}]


def test_drift_metrics_are_emitted_in_the_alarms_namespace(dev: Synthesized, template: Template) -> None:
    _, alarm = _drift_alarm(template, "HeartbeatScorePsi")
    ingest = dev.template("ingest")
    ingest.has_resource_properties(
        "AWS::Lambda::Function",
        {"Environment": {"Variables": Match.object_like({"METRICS_NAMESPACE": alarm["Namespace"]})}},
    )


def test_alarm_state_change_to_alarm_queues_a_retraining_request(template: Template) -> None:
    score_alarm, _ = _drift_alarm(template, "HeartbeatScorePsi")
    input_alarm, _ = _drift_alarm(template, "HeartbeatInputShift")
    queue = Capture()
    dead_letters = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                # Not the anomaly-rate alarm: an incident raises it too, and is no reason to retrain.
                "resources": [{"Fn::GetAtt": [score_alarm, "Arn"]}, {"Fn::GetAtt": [input_alarm, "Arn"]}],
                "detail": {"state": {"value": ["ALARM"]}},
            },
            "State": "ENABLED",
            "Targets": [
                {
                    "Arn": {"Fn::GetAtt": [queue, "Arn"]},
                    "Id": Match.any_value(),
                    "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [dead_letters, "Arn"]}},
                    "RetryPolicy": {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 7200},
                }
            ],
        },
    )
    queues = template.find_resources("AWS::SQS::Queue")
    retrain = queues[queue.as_string()]["Properties"]
    assert retrain["SqsManagedSseEnabled"] is True
    # Six times the retrain function's one-minute timeout.
    assert retrain["VisibilityTimeout"] == 360
    assert retrain["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dead_letters.as_string(), "Arn"]},
        "maxReceiveCount": 5,
    }
    assert queues[dead_letters.as_string()]["Properties"]["SqsManagedSseEnabled"] is True


def test_only_eventbridge_from_the_drift_rule_may_send_retraining_requests(template: Template) -> None:
    (rule,) = template.find_resources("AWS::Events::Rule")
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule, "Arn"]}}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_prod_drift_threshold_comes_from_its_context(prod: Synthesized) -> None:
    template = prod.template("monitoring")
    _, alarm = _drift_alarm(template)
    assert alarm["Namespace"] == "EdgeML/edgeml-prod"
    assert alarm["Threshold"] == 0.05
    assert _drift_alarm(template, "HeartbeatScorePsi")[1]["Threshold"] == 0.2
    assert _drift_alarm(template, "HeartbeatInputShift")[1]["Threshold"] == 3.0


@pytest.mark.parametrize(
    ("metric", "dimension", "export"),
    [
        ("Errors", "FunctionName", "IngestFunction"),
        ("ApproximateNumberOfMessagesVisible", "QueueName", "IngestFailureQueue"),
        ("ApproximateNumberOfMessagesVisible", "QueueName", "IngestRuleErrorQueue"),
    ],
)
def test_ingest_failure_alarms(template: Template, metric: str, dimension: str, export: str) -> None:
    topic = _alarm_topic(template)
    on_function = dimension == "FunctionName"
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Lambda" if on_function else "AWS/SQS",
            "MetricName": metric,
            "Statistic": "Sum" if on_function else "Maximum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Dimensions": [
                {
                    "Name": dimension,
                    "Value": {"Fn::ImportValue": Match.string_like_regexp(f"EdgemlDevIngest:.*{export}")},
                }
            ],
            "AlarmActions": [{"Ref": topic}],
            "OKActions": [{"Ref": topic}],
        },
    )
