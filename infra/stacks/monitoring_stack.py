"""Deployable component: alarms on the publisher, the model-lifecycle check and the ingest path, the drift
alarms, the retraining they trigger, and the topic they notify."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.drift import DriftAlarm
from infra.parts.ingest import ANOMALY_RATE_METRIC, AnomalyIngest
from infra.parts.ingest_alarms import IngestAlarms
from infra.parts.lifecycle import ModelLifecycle
from infra.parts.lifecycle_alarms import LifecycleAlarms
from infra.parts.model_store import model_store_bucket_name
from infra.parts.monitoring import Monitoring
from infra.parts.publisher import Publisher
from infra.parts.retrain import RetrainTrigger
from infra.stacks.common import acknowledge_lambda_defaults, log_retention, removal_policy


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
        training_role: iam.IRole,
        model_store_key_arn: str,
        code_directory: str,
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
            metric_namespace=ingest.metric_namespace,
        )
        self.lifecycle_alarms = LifecycleAlarms(
            self,
            "LifecycleAlarms",
            function=lifecycle.function,
            dead_letter_queue=lifecycle.dead_letter_queue,
            schedule_interval=Duration.minutes(config.lifecycle_schedule_minutes),
            notify=self.monitoring.topic,
            # The lifecycle function writes LifecycleNeedsAttention there (infra/stacks/lifecycle_stack.py).
            metric_namespace=ingest.metric_namespace,
        )
        self.drift = DriftAlarm(
            self,
            "Drift",
            metric_namespace=ingest.metric_namespace,
            metric_name=ANOMALY_RATE_METRIC,
            threshold=config.drift_anomaly_rate_threshold,
            score_psi_threshold=config.drift_score_psi_threshold,
            input_shift_threshold=config.drift_input_shift_threshold,
            notify=self.monitoring.topic,
        )
        self.retrain = RetrainTrigger(
            self,
            "Retrain",
            name_prefix=config.name_prefix,
            code_directory=code_directory,
            queue=self.drift.retrain_queue,
            training_role=training_role,
            model_store_bucket_name=model_store_bucket_name(config.name_prefix),
            dataset=config.retrain_dataset,
            model_name=config.retrain_model_name,
            instance_type=config.retrain_instance_type,
            cooldown_hours=config.retrain_cooldown_hours,
            log_retention=log_retention(config),
            removal_policy=removal_policy(config),
            # The jobs' output under the model store's key, not the account's aws/s3 key.
            model_store_key_arn=model_store_key_arn,
        )
        acknowledge_lambda_defaults(self.retrain.role)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "DriftAlarmName", value=self.drift.alarm.alarm_name)
        CfnOutput(self, "RetrainQueueUrl", value=self.drift.retrain_queue.queue_url)
        CfnOutput(self, "ScoreDriftAlarmName", value=self.drift.score_alarm.alarm_name)
        CfnOutput(self, "InputDriftAlarmName", value=self.drift.input_alarm.alarm_name)
        CfnOutput(self, "RetrainFunctionName", value=self.retrain.function.function_name)
