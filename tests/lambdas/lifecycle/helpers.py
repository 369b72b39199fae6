"""A whole local control plane for the lifecycle tests: moto (S3, DynamoDB, IoT) and the Greengrass v2 fake.

Greengrass is served over real HTTP by the fake; moto's ``mock_aws`` is started first and the Greengrass
client is created with the fake's ``endpoint_url``, as in the publisher's tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from lambdas.lifecycle.adapters import DynamoRegistry, EventsTableHeartbeats, GreengrassFleet
from lambdas.lifecycle.config import LifecycleConfig, load_config
from lambdas.lifecycle.core import PublishOutcome, publish_gated
from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA
from lambdas.lifecycle.services import Services
from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.config import PublisherConfig
from lambdas.publisher.config import load_config as load_publisher_config
from lambdas.publisher.core import WaitPolicy
from lambdas.publisher.events import model_key, parse_event
from standins.greengrass_fake import GreengrassV2Fake, InstalledComponentReport, serve
from tests.lambdas.publisher.onnx_models import build_model

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "edgeml-models"
LINEAGE_TABLE = "edgeml-lineage"
EVENTS_TABLE = "edgeml-events"
CANARY = f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/edgeml-canary"
FLEET = f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/edgeml-fleet"
MODEL_COMPONENT = "com.edgeml.AnomalyModel"
INFERENCE_COMPONENT = "com.edgeml.AnomalyDetector"
INFERENCE_VERSION = "1.2.0"
CANARY_THINGS = ("canary-01", "canary-02")
FLEET_THINGS = ("fleet-01", "fleet-02", "fleet-03")
ENVIRONMENT = {
    "MODEL_BUCKET": BUCKET,
    "INFERENCE_COMPONENT_VERSION": INFERENCE_VERSION,
    "TARGET_THING_GROUP_ARN": CANARY,
    "MAX_MODEL_BYTES": "1000000",
    "LINEAGE_TABLE": LINEAGE_TABLE,
    "FLEET_THING_GROUP_ARN": FLEET,
}


def training_metrics(n_windows: int = 2000, fraction: float = 0.002) -> dict[str, object]:
    return {
        "n_windows": n_windows,
        "calibration": {"rule": "quantile", "threshold": 1.5, "train_fraction_over_threshold": fraction},
    }


def model_bytes(model_version: str, *, n_windows: int = 2000, fraction: float = 0.002) -> bytes:
    return build_model(
        metadata={
            "model_version": model_version,
            "training_metrics": json.dumps(training_metrics(n_windows, fraction)),
        }
    )


def training_event(job: str, uri: str, *, status: str = "Completed") -> dict[str, Any]:
    return {
        "version": "0",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": {
            "TrainingJobName": job,
            "TrainingJobStatus": status,
            "ModelArtifacts": {"S3ModelArtifacts": uri},
            "HyperParameters": {"model_name": "pump"},
        },
    }


class Clock:
    """Strictly increasing time, so registry sort keys order as the steps happened."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def inference_recipe() -> bytes:
    return json.dumps(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": INFERENCE_COMPONENT,
            "ComponentVersion": INFERENCE_VERSION,
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "python3 -m anomaly_detector"}}],
        }
    ).encode()


@dataclass
class Plane:
    s3: Any
    gg: Any
    ddb: Any
    iot: Any
    fake: GreengrassV2Fake
    endpoint_url: str
    publisher: PublisherConfig
    lifecycle: LifecycleConfig
    clock: Clock = field(default_factory=Clock)

    @property
    def registry(self) -> DynamoRegistry:
        return DynamoRegistry(LINEAGE_TABLE, self.ddb)

    def services(self, *, heartbeats: bool = False, lifecycle: LifecycleConfig | None = None) -> Services:
        return Services(
            config=lifecycle or self.lifecycle,
            registry=self.registry,
            deployments=GreengrassDeployments(self.gg),
            fleet=GreengrassFleet(self.gg, self.iot),
            heartbeats=EventsTableHeartbeats(EVENTS_TABLE, self.ddb) if heartbeats else None,
            clock=self.clock,
            sleep=lambda _seconds: None,
        )

    def put_model(self, model_version: str, data: bytes | None = None, *, key: str | None = None) -> str:
        key = key or f"training/{model_version}/output/model.onnx"
        self.s3.put_object(
            Bucket=BUCKET, Key=key, Body=data if data is not None else model_bytes(model_version)
        )
        return f"s3://{BUCKET}/{key}"

    def publish(
        self, event: dict[str, Any], *, lifecycle: LifecycleConfig | None = None
    ) -> list[PublishOutcome]:
        return [
            publish_gated(
                request,
                publisher=self.publisher,
                lifecycle=lifecycle or self.lifecycle,
                store=S3ModelStore(self.s3),
                components=GreengrassComponents(self.gg),
                deployments=GreengrassDeployments(self.gg),
                registry=self.registry,
                clock=self.clock,
                sleep=lambda _seconds: None,
                wait=WaitPolicy(max_tries=3, delay_seconds=0.0),
            )
            for request in parse_event(event, model_bucket=BUCKET)
        ]

    def train_and_publish(self, job: str, model_version: str, **metrics: Any) -> PublishOutcome:
        uri = self.put_model(model_version, model_bytes(model_version, **metrics))
        (outcome,) = self.publish(training_event(job, uri))
        return outcome

    def report(
        self,
        things: Sequence[str],
        deployment_id: str,
        *,
        status: str = "SUCCEEDED",
        model_version: str = "1.0.0",
        inference_state: str = "RUNNING",
        reason: str | None = None,
    ) -> None:
        """Devices report a deployment's outcome and their components, as a nucleus does."""
        for thing in things:
            self.fake.report_device_status(
                thing,
                deployment_id,
                status,
                [
                    InstalledComponentReport(MODEL_COMPONENT, model_version, "FINISHED"),
                    InstalledComponentReport(INFERENCE_COMPONENT, INFERENCE_VERSION, inference_state),
                ],
                reason=reason,
            )

    def latest_deployment(self, target: str) -> dict[str, Any]:
        (summary,) = self.gg.list_deployments(targetArn=target, historyFilter="LATEST_ONLY")["deployments"]
        deployment: dict[str, Any] = self.gg.get_deployment(deploymentId=summary["deploymentId"])
        return deployment

    def deployment_count(self, target: str) -> int:
        return len(self.gg.list_deployments(targetArn=target, historyFilter="ALL")["deployments"])


@contextmanager
def control_plane(extra_env: dict[str, str] | None = None) -> Iterator[Plane]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        ddb = boto3.client("dynamodb", region_name=REGION)
        iot = boto3.client("iot", region_name=REGION)
        with served_plane(s3, ddb, iot, {**ENVIRONMENT, **(extra_env or {})}) as plane:
            yield plane


@contextmanager
def served_plane(
    s3: Any,
    ddb: Any,
    iot: Any,
    environ: dict[str, str],
    *,
    canary_group: str = "edgeml-canary",
    fleet_group: str = "edgeml-fleet",
) -> Iterator[Plane]:
    """The model bucket, lineage table, canary and fleet groups with their things on these clients
    (``mock_aws`` or a moto server), and the Greengrass fake over HTTP with the inference component."""
    s3.create_bucket(Bucket=BUCKET)
    ddb.create_table(**LINEAGE_TABLE_SCHEMA.create_table_kwargs(LINEAGE_TABLE))
    for group, things in ((canary_group, CANARY_THINGS), (fleet_group, FLEET_THINGS)):
        iot.create_thing_group(thingGroupName=group)
        for thing in things:
            iot.create_thing(thingName=thing)
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    fake = GreengrassV2Fake(s3_client=s3, iot_client=iot)
    for thing in CANARY_THINGS + FLEET_THINGS:
        fake.register_core_device(thing)
    with serve(fake=fake, host="127.0.0.1", port=0) as running:
        gg = boto3.client("greengrassv2", endpoint_url=running.endpoint_url, region_name=REGION)
        gg.create_component_version(inlineRecipe=inference_recipe())
        yield Plane(
            s3=s3,
            gg=gg,
            ddb=ddb,
            iot=iot,
            fake=running.fake,
            endpoint_url=running.endpoint_url,
            publisher=load_publisher_config(environ),
            lifecycle=load_config(environ),
        )


def version_key(model_version: str) -> str:
    return model_key("pump", model_version)
