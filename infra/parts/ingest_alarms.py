"""Alarms on the ingest path's failure sinks: nothing a device sent may wait unseen in a queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas.ingest.adapters import ACK_PUBLISH_FAILURES_METRIC

PERIOD = Duration.minutes(5)
# Acks failing now and then only cost resends; failing for 15 minutes means every device resends everything.
ACK_FAILURE_PERIODS = 3


class IngestAlarms(Construct):
    """Attributes: ``errors_alarm``, ``failed_events_alarm``, ``rule_errors_alarm``,
    ``ack_failures_alarm``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function: lambda_.IFunction,
        failure_queue: sqs.IQueue,
        rule_error_queue: sqs.IQueue,
        notify: sns.ITopic,
        metric_namespace: str,
    ) -> None:
        super().__init__(scope, id_)
        self.errors_alarm = self._at_least_one(
            "IngestErrors",
            "The ingest function failed an invocation (it will be retried, then sent to its failure queue)",
            function.metric_errors(period=PERIOD, statistic="Sum"),
        )
        self.failed_events_alarm = self._at_least_one(
            "IngestFailedEvents",
            "Device messages the ingest function gave up on are waiting in its on-failure queue",
            failure_queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
        )
        self.rule_errors_alarm = self._at_least_one(
            "IngestRuleErrors",
            "IoT Core could not deliver device messages (rule error action): see the rule error queue",
            rule_error_queue.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"
            ),
        )
        self.ack_failures_alarm = cloudwatch.Alarm(
            self,
            "IngestAckFailures",
            alarm_description=(
                "Acks to devices have failed for 15 minutes: devices in ack mode resend every event "
                "(see the function's 'ack not published' log lines)"
            ),
            metric=cloudwatch.Metric(
                namespace=metric_namespace,
                metric_name=ACK_PUBLISH_FAILURES_METRIC,
                period=PERIOD,
                statistic="Sum",
            ),
            threshold=1,
            evaluation_periods=ACK_FAILURE_PERIODS,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = cw_actions.SnsAction(notify)
        for alarm in (
            self.errors_alarm,
            self.failed_events_alarm,
            self.rule_errors_alarm,
            self.ack_failures_alarm,
        ):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)

    def _at_least_one(self, id_: str, description: str, metric: cloudwatch.IMetric) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            id_,
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
