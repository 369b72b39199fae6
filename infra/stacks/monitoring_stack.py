"""Deployable component: alarms on the publisher, the model-lifecycle check and the ingest path, the drift
alarm, and the topic they notify."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.drift import DriftAlarm
from infra.parts.ingest import ANOMALY_RATE_METRIC, AnomalyIngest
from infra.parts.ingest_alarms import IngestAlarms
from infra.parts.lifecycle import ModelLifecycle
from infra.parts.lifecycle_alarms import LifecycleAlarms
from infra.parts.monitoring import Monitoring
from infra.parts.publisher import Publisher
from infra.stacks.common import removal_policy


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: PlatformConfig,
        publisher: Publisher,
        ingest: AnomalyIngest,
        lifecycle: ModelLifecycle,
        **kwargs: Any,
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
        self.ingest_alarms = IngestAlarms(
            self,
            "IngestAlarms",
            function=ingest.function,
            failure_queue=ingest.failure_queue,
            rule_error_queue=ingest.rule_error_queue,
            notify=self.monitoring.topic,
        )
        self.lifecycle_alarms = LifecycleAlarms(
            self,
            "LifecycleAlarms",
            function=lifecycle.function,
            dead_letter_queue=lifecycle.dead_letter_queue,
            schedule_interval=Duration.minutes(config.lifecycle_schedule_minutes),
            notify=self.monitoring.topic,
        )
        self.drift = DriftAlarm(
            self,
            "Drift",
            metric_namespace=ingest.metric_namespace,
            metric_name=ANOMALY_RATE_METRIC,
            threshold=config.drift_anomaly_rate_threshold,
            notify=self.monitoring.topic,
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "DriftAlarmName", value=self.drift.alarm.alarm_name)
        CfnOutput(self, "RetrainQueueUrl", value=self.drift.retrain_queue.queue_url)
