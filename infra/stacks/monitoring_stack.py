"""Deployable component: alarms on the publisher and the topic they notify."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.monitoring import Monitoring
from infra.parts.publisher import Publisher
from infra.stacks.common import removal_policy


class MonitoringStack(Stack):
    def __init__(
        self, scope: Construct, id_: str, *, config: PlatformConfig, publisher: Publisher, **kwargs: Any
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            name_prefix=config.name_prefix,
            publisher_function=publisher.function,
            dead_letter_queue=publisher.dead_letter_queue,
            alert_email=config.alert_email,
            removal_policy=removal_policy(config),
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
