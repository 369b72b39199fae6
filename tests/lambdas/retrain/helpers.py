"""Shared values: a configuration, an alarm event as EventBridge queues it, a launcher-shaped template job."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from lambdas.retrain.config import RetrainConfig

PREFIX = "edgeml-test"
BUCKET = "edgeml-test-models"
ROLE_ARN = "arn:aws:iam::123456789012:role/edgeml-test-training"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-py312-cpu-py3"
ALARM_TIME = "2026-11-24T20:40:05.123+0000"
ALARM_NAME = "edgeml-test-drift-score"
CONFIG = RetrainConfig(
    job_name_prefix=PREFIX,
    training_role_arn=ROLE_ARN,
    model_store_bucket=BUCKET,
    dataset="nab",
    model_name="pump",
)


def alarm_event(**detail_overrides: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "alarmName": ALARM_NAME,
        "state": {"value": "ALARM", "reason": "Threshold Crossed", "timestamp": ALARM_TIME},
        "previousState": {"value": "OK", "timestamp": "2026-11-24T19:00:00.000+0000"},
    }
    detail.update(detail_overrides)
    return {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": "2026-11-24T20:40:05Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{ALARM_NAME}"],
        "detail": detail,
    }


def sqs_event(*bodies: object, ids: list[str] | None = None) -> dict[str, Any]:
    names = ids or [f"msg-{i}" for i in range(len(bodies))]
    return {
        "Records": [
            {
                "messageId": name,
                "receiptHandle": f"handle-{name}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "eventSource": "aws:sqs",
            }
            for name, body in zip(names, bodies, strict=True)
        ]
    }


def launcher_request(name: str, **hyperparameters: str) -> dict[str, Any]:
    """A CreateTrainingJob request as training/launch.py's SDK call sends it (see the parity test)."""
    code = f"s3://{BUCKET}/code/{PREFIX}-train/{name}/input"
    return {
        "TrainingJobName": name,
        "HyperParameters": {"model_name": "pump", "model_version": "v-old", **hyperparameters},
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "TrainingImage": IMAGE,
            "ContainerEntrypoint": ["/bin/bash"],
            "ContainerArguments": [
                "-c",
                "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh "
                "&& /opt/ml/input/data/sm_drivers/sm_train.sh",
            ],
        },
        "RoleArn": ROLE_ARN,
        "InputDataConfig": [
            _channel("train", f"s3://{BUCKET}/datasets/nab/"),
            _channel("code", f"{code}/code"),
            _channel("sm_drivers", f"{code}/sm_drivers"),
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/training-output/", "CompressionType": "GZIP"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "Environment": {"PYTHONPATH": "/opt/ml/input/data/code"},
    }


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
