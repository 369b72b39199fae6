"""Alarms on the scheduled model-lifecycle check: it failing, or stuck, is a rollout nobody is watching.

A refused promotion (canary not healthy yet) is a normal return, not an error: an error is an AWS failure
(botocore has already retried throttling) or a bad configuration, and both need a person. Failed runs also
land in the dead-letter queue, as do ticks EventBridge could not deliver, which raise no function error.
A run that succeeds can still report a state no later run resolves (a failed canary without automatic
rollback, a failed rollback, overlapping thing groups): each run writes ``LifecycleNeedsAttention`` (1 or
0, an EMF line in its log, so no IAM permission is involved), and that is alarmed on too.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas.lifecycle.adapters import NEEDS_ATTENTION_METRIC

PERIOD = Duration.minutes(5)


class LifecycleAlarms(Construct):
    """Attributes: ``errors_alarm``, ``dead_letter_alarm``, ``needs_attention_alarm``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function: lambda_.IFunction,
        dead_letter_queue: sqs.IQueue,
        schedule_interval: Duration,
        notify: sns.ITopic,
        metric_namespace: str,
    ) -> None:
        super().__init__(scope, id_)
        self.errors_alarm = cloudwatch.Alarm(
            self,
            "LifecycleErrors",
            alarm_description=(
                "A scheduled model-lifecycle check failed (AWS error or configuration): canary promotion"
                " and automatic rollback wait until it runs cleanly"
            ),
            # One period per scheduled run: the alarm returns to OK after the next clean run.
            metric=function.metric_errors(period=schedule_interval, statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.dead_letter_alarm = cloudwatch.Alarm(
            self,
            "LifecycleDeadLetters",
            alarm_description="Failed or undelivered lifecycle runs wait in its dead-letter queue",
            metric=dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.needs_attention_alarm = cloudwatch.Alarm(
            self,
            "LifecycleNeedsAttention",
            alarm_description=(
                "The scheduled model-lifecycle check reports a state it cannot resolve by itself (a failed"
                " canary without automatic rollback, a failed rollback, canary devices also in the fleet"
                " group, a canary model that can never be promoted): it repeats every run until a person"
                " acts. The reason is the 'attention' field of the function's 'lifecycle check needs"
                " attention' log line; what to do is in docs/runbook.md"
            ),
            # Every run writes 1 or 0: one period per run alarms at once and clears on the next good run.
            metric=cloudwatch.Metric(
                namespace=metric_namespace,
                metric_name=NEEDS_ATTENTION_METRIC,
                period=schedule_interval,
                statistic="Maximum",
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # No data is no run, or no namespace configured: the errors and dead-letter alarms cover those.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = cw_actions.SnsAction(notify)
        for alarm in (self.errors_alarm, self.dead_letter_alarm, self.needs_attention_alarm):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
