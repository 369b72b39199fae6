"""Alarms on the scheduled model-lifecycle check: it failing is a rollout nobody is watching.

A refused promotion (canary not healthy yet) is a normal return, not an error: an error is an AWS failure
(botocore has already retried throttling) or a bad configuration, and both need a person. Failed runs also
land in the dead-letter queue, as do ticks EventBridge could not deliver, which raise no function error.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

PERIOD = Duration.minutes(5)


class LifecycleAlarms(Construct):
    """Attributes: ``errors_alarm``, ``dead_letter_alarm``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function: lambda_.IFunction,
        dead_letter_queue: sqs.IQueue,
        schedule_interval: Duration,
        notify: sns.ITopic,
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
        action = cw_actions.SnsAction(notify)
        for alarm in (self.errors_alarm, self.dead_letter_alarm):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
