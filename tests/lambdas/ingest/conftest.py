"""moto-backed fixtures: the events table (from the exported schema), the archive bucket, the alert topic.

Alerts are observed through an SQS queue subscribed to the topic, the way a real subscriber sees them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.ingest.adapters import DynamoEventStore, S3Archive, SnsAlerts
from lambdas.ingest.config import IngestConfig
from lambdas.ingest.table import EVENTS_TABLE_SCHEMA, TTL_ATTRIBUTE
from tests.lambdas.ingest.helpers import BUCKET, REGION, TABLE


@dataclass
class Aws:
    dynamodb: Any
    s3: Any
    sns: Any
    sqs: Any
    topic_arn: str
    queue_url: str
    config: IngestConfig

    def store(self) -> DynamoEventStore:
        return DynamoEventStore(TABLE, client=self.dynamodb)

    def archive(self) -> S3Archive:
        return S3Archive(BUCKET, client=self.s3)

    def alerts(self) -> SnsAlerts:
        return SnsAlerts(self.topic_arn, client=self.sns)

    def items(self) -> list[dict[str, Any]]:
        return list(self.dynamodb.scan(TableName=TABLE)["Items"])

    def items_of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.items() if item.get("kind", {}).get("S") == kind]

    def archive_keys(self) -> list[str]:
        return [obj["Key"] for obj in self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]

    def received_alerts(self) -> list[dict[str, Any]]:
        """Every SNS notification delivered so far, as {"subject": ..., "message": {...}}."""
        received: list[dict[str, Any]] = []
        while True:
            response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = response.get("Messages", [])
            if not messages:
                return received
            for message in messages:
                envelope = json.loads(message["Body"])
                received.append(
                    {"subject": envelope.get("Subject"), "message": json.loads(envelope["Message"])}
                )
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(**EVENTS_TABLE_SCHEMA.create_table_kwargs(TABLE))
        dynamodb.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sns = boto3.client("sns", region_name=REGION)
        topic_arn = sns.create_topic(Name="edgeml-alerts")["TopicArn"]
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="alert-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        config = IngestConfig(
            events_table=TABLE,
            archive_bucket=BUCKET,
            alert_topic_arn=topic_arn,
            alerts_per_window=3,
            alert_window_s=600,
            heartbeat_ttl_days=7,
        )
        yield Aws(dynamodb, s3, sns, sqs, topic_arn, queue_url, config)
