"""Alarms that page someone: publisher errors and undelivered events, into one encrypted SNS topic."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.parts.common import rotating_key


class Monitoring(Construct):
    """Attributes: ``topic``, ``key``, ``publisher_errors_alarm``, ``dead_letter_alarm``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        name_prefix: str,
        publisher_function: lambda_.IFunction,
        dead_letter_queue: sqs.IQueue,
        alert_email: str | None,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        self.key = rotating_key(
            self, "AlarmTopicKey", description=f"{name_prefix} alarm topic", removal_policy=removal_policy
        )
        # CloudWatch publishes alarm notifications itself, so it must be able to use the topic's key
        # (the AWS-managed aws/sns key would refuse it).
        self.key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey")
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{name_prefix} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        if alert_email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(alert_email))

        action = cw_actions.SnsAction(self.topic)
        self.publisher_errors_alarm = cloudwatch.Alarm(
            self,
            "PublisherErrors",
            alarm_description="The model publisher failed an invocation (refused model or AWS error)",
            metric=publisher_function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.dead_letter_alarm = cloudwatch.Alarm(
            self,
            "PublisherDeadLetters",
            alarm_description="Events the publisher gave up on are waiting in its dead-letter queue",
            metric=dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (self.publisher_errors_alarm, self.dead_letter_alarm):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
