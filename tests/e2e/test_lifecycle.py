"""The whole model lifecycle, locally: train on a NAB slice → SageMaker "Training Job State Change" event →
publisher (gate, component, canary deployment, lineage) → canary devices report healthy and send
heartbeats through the ingest Lambda → promote → fleet deployment → an anomaly event ingested → the
anomaly, the device's model and the model's training job are one query each.

moto stands in for S3, DynamoDB, IoT and SNS; the Greengrass v2 fake serves Greengrass over HTTP; the
devices are the fake's device-side reports (the edge component itself runs in test_demo).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdas.ingest import handler as ingest_handler
from lambdas.ingest.adapters import DynamoEventStore, S3Archive, SnsAlerts
from lambdas.ingest.config import load_config as load_ingest_config
from lambdas.ingest.queries import EventQueries
from lambdas.ingest.table import EVENTS_TABLE_SCHEMA
from lambdas.lifecycle.cli import EXIT_OK, EXIT_REFUSED, main
from lambdas.lifecycle.core import device_view
from lambdas.lifecycle.registry import ModelStatus
from lambdas.lifecycle.services import Services
from lambdas.publisher import handler as publisher_handler
from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from tests.lambdas.lifecycle.helpers import (
    BUCKET,
    CANARY,
    CANARY_THINGS,
    EVENTS_TABLE,
    FLEET,
    FLEET_THINGS,
    MODEL_COMPONENT,
    Plane,
    control_plane,
)
from training import train

NAB_SLICE = Path(__file__).resolve().parents[1] / "training" / "data" / "machine_temperature_head2500.csv"
ARCHIVE_BUCKET = "edgeml-archive"
JOB = "edgeml-pump-20261124-2000"
MODEL_VERSION = "20261124T200000Z-nab00001"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_GREENGRASSV2"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def plane() -> Iterator[Plane]:
    with control_plane({"EVENTS_TABLE": EVENTS_TABLE, "HEALTH_POLICY": '{"min_windows": 500}'}) as running:
        running.ddb.create_table(**EVENTS_TABLE_SCHEMA.create_table_kwargs(EVENTS_TABLE))
        running.s3.create_bucket(Bucket=ARCHIVE_BUCKET)
        yield running


def sagemaker_output(model_dir: Path) -> bytes:
    """SageMaker's model.tar.gz: the model directory's files at the top level."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def heartbeat(thing: str, minute: int, windows: int, anomalous: int) -> dict[str, Any]:
    return {
        "schema": "edgeml.health/1",
        "thing_name": thing,
        "timestamp": f"2026-11-24T21:{minute:02d}:00Z",
        "samples_in": windows + 31,
        "windows_scored": windows,
        "anomalous_windows": anomalous,
        "anomalies_forwarded": anomalous,
        "rejects": {},
        "model_version": MODEL_VERSION,
        "thing_from_topic": thing,
    }


def anomaly(thing: str) -> dict[str, Any]:
    return {
        "schema": "edgeml.anomaly/1",
        "event_id": "e2e0lifecycle0000000000000000001",
        "thing_name": thing,
        "stream": "machine_temperature",
        "timestamp": "2026-11-24T21:30:00Z",
        "start": "2026-11-24T21:25:00Z",
        "end": "2026-11-24T21:30:00Z",
        "score": 12.3,
        "peak_score": 12.3,
        "threshold": 4.1,
        "model_version": MODEL_VERSION,
        "channels": ["value"],
        "values": [[71.3], [72.0], [95.5]],
        "suppressed": 0,
        "thing_from_topic": thing,
    }


def test_training_to_fleet_to_a_queryable_anomaly(plane: Plane, tmp_path: Path):
    # 1. Train on the NAB slice, as the SageMaker container would, and upload its model.tar.gz.
    model_dir = tmp_path / "model"
    code = train.main(
        [
            "--train", str(NAB_SLICE),
            "--model_dir", str(model_dir),
            "--model_name", "pump",
            "--model_version", MODEL_VERSION,
            "--window_length", "32",
        ]
    )  # fmt: skip
    assert code == train.EXIT_OK
    metrics = json.loads((model_dir / "metrics.json").read_text())
    output_key = f"training/{JOB}/output/model.tar.gz"
    plane.s3.put_object(Bucket=BUCKET, Key=output_key, Body=sagemaker_output(model_dir))

    # 2. The EventBridge event of the completed job drives the publisher Lambda's entry point.
    event = {
        "version": "0",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": {
            "TrainingJobName": JOB,
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/{output_key}"},
            "HyperParameters": {"model_name": "pump"},
        },
    }
    deps = publisher_handler.Dependencies(
        config=plane.publisher,
        store=S3ModelStore(plane.s3),
        components=GreengrassComponents(plane.gg),
        deployments=GreengrassDeployments(plane.gg),
        lifecycle=plane.lifecycle,
        registry=plane.registry,
        clock=plane.clock,
    )
    response = publisher_handler.handle(event, deps)
    outcomes = response["outcomes"]
    assert isinstance(outcomes, list)
    (outcome,) = outcomes
    assert outcome["outcome"] == "published", outcome
    canary_deployment = plane.latest_deployment(CANARY)
    assert canary_deployment["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    assert plane.deployment_count(FLEET) == 0
    assert_released_under_components(plane, outcome["publish"], str(metrics["model_sha256"]))
    # A redelivery of the same event changes nothing.
    assert publisher_handler.handle(event, deps)["outcomes"][0]["outcome"] == "duplicate"  # type: ignore[index]

    # 3. Canary devices install and run it; promotion waits for evidence from their heartbeats.
    plane.report(CANARY_THINGS, canary_deployment["deploymentId"])
    code, text = cli(plane, "promote")
    assert code == EXIT_REFUSED
    assert f"canary-01: has scored 0 windows with model {MODEL_VERSION}; 500 are needed" in text
    ingest = ingest_handler.Dependencies(
        config=load_ingest_config(
            {"EVENTS_TABLE": EVENTS_TABLE, "ARCHIVE_BUCKET": ARCHIVE_BUCKET, "ALERT_TOPIC_ARN": topic(plane)}
        ),
        store=DynamoEventStore(EVENTS_TABLE, plane.ddb),
        archive=S3Archive(ARCHIVE_BUCKET, plane.s3),
        alerts=SnsAlerts(topic(plane), boto3.client("sns", region_name="us-east-1")),
        clock=lambda: 1_790_000_000.0,
    )
    for thing in CANARY_THINGS:
        ingest_handler.handle(heartbeat(thing, 0, 100, 0), ingest)
        ingest_handler.handle(heartbeat(thing, 10, 1100, 3), ingest)  # 0.3 % over 1000 windows

    # 4. Healthy canary: promote to the fleet.
    code, text = cli(plane, "promote")
    assert code == EXIT_OK, text
    fleet_deployment = plane.latest_deployment(FLEET)
    assert fleet_deployment["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    plane.report(FLEET_THINGS, fleet_deployment["deploymentId"])

    # 5. A fleet device reports an anomaly; it is stored once and queryable with its lineage.
    result = ingest_handler.handle(anomaly("fleet-02"), ingest)
    assert result["kind"] == "anomaly"
    (stored,) = EventQueries(EVENTS_TABLE, plane.ddb).events_for_device(
        "fleet-02", datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
    )
    assert (stored.model_version, stored.peak_score) == (MODEL_VERSION, 12.3)
    s = plane.services(heartbeats=True)
    runs = device_view("fleet-02", lifecycle=s.config, registry=s.registry, fleet=s.fleet)
    assert (runs.model_version, runs.training_job, runs.model_component_version) == (
        MODEL_VERSION,
        JOB,
        "1.0.0",
    )
    assert (
        runs.model_version == stored.model_version
    )  # the anomaly's model is the one the registry says runs there
    model = s.registry.get_model(stored.model_version)
    assert model is not None
    assert model.status is ModelStatus.FLEET
    assert model.sha256 == metrics["model_sha256"]
    assert model.training_metrics == metrics["training_metrics"]
    assert [d.stage.value for d in s.registry.deployments_for_model(MODEL_VERSION)] == ["fleet", "canary"]


def assert_released_under_components(plane: Plane, publish: object, sha256: str) -> None:
    """The canary downloads the released copy under components/; the candidate stays under models/."""
    assert isinstance(publish, dict)
    artifact_key = f"components/{MODEL_COMPONENT}/1.0.0/model.onnx"
    assert publish["artifact_uri"] == f"s3://{BUCKET}/{artifact_key}"
    assert publish["model_uri"] == f"s3://{BUCKET}/models/pump/{MODEL_VERSION}/model.onnx"
    recipe = json.loads(
        plane.gg.get_component(arn=publish["component_arn"], recipeOutputFormat="JSON")["recipe"]
    )
    assert [a["URI"] for a in recipe["Manifests"][0]["Artifacts"]] == [publish["artifact_uri"]]
    released = plane.s3.get_object(Bucket=BUCKET, Key=artifact_key)["Body"].read()
    assert hashlib.sha256(released).hexdigest() == sha256


def topic(plane: Plane) -> str:
    arn: str = boto3.client("sns", region_name="us-east-1").create_topic(Name="edgeml-alerts")["TopicArn"]
    return arn


def cli(plane: Plane, *argv: str) -> tuple[int, str]:
    def services(_environ: Mapping[str, str]) -> Services:
        return plane.services(heartbeats=True)

    out = io.StringIO()
    return main(list(argv), environ={}, services=services, out=out), out.getvalue()
