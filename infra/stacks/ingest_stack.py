"""Deployable component: anomaly ingest (IoT rules, ingest Lambda, events table, archive, alert topic)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.ingest import AnomalyIngest
from infra.parts.lineage import LineageRegistry
from infra.stacks.common import acknowledge_lambda_defaults, log_retention, removal_policy


class IngestStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        config: PlatformConfig,
        lineage: LineageRegistry,
        code_directory: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        self.ingest = AnomalyIngest(
            self,
            "Ingest",
            name_prefix=config.name_prefix,
            code_directory=code_directory,
            reserved_concurrency=config.ingest_reserved_concurrency,
            alerts_per_window=config.alerts_per_window,
            alert_window_seconds=config.alert_window_seconds,
            heartbeat_ttl_days=config.heartbeat_ttl_days,
            archive_expiration_days=config.archive_expiration_days,
            noncurrent_version_expiration=Duration.days(config.noncurrent_version_expiration_days),
            alert_email=config.alert_email,
            lineage=lineage,
            log_retention=log_retention(config),
            removal_policy=removal_policy(config),
            auto_delete_objects=config.auto_delete_objects,
        )
        acknowledge_lambda_defaults(self.ingest.role)

        CfnOutput(self, "IngestFunctionName", value=self.ingest.function.function_name)
        CfnOutput(self, "EventsTableName", value=self.ingest.table.table_name)
        CfnOutput(self, "ArchiveBucketName", value=self.ingest.archive_bucket.bucket_name)
        CfnOutput(self, "AlertTopicArn", value=self.ingest.alert_topic.topic_arn)
        CfnOutput(self, "IngestFailureQueueUrl", value=self.ingest.failure_queue.queue_url)
        CfnOutput(self, "RuleErrorQueueUrl", value=self.ingest.rule_error_queue.queue_url)
