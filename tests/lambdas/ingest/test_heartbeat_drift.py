"""Heartbeat drift end to end in moto: registry lookup, stored report, EMF line, handler result."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from lambdas.ingest.adapters import EmfDriftMetrics, RegistryTrainingProfiles
from lambdas.ingest.core import ingest_heartbeat
from lambdas.ingest.drift import DriftReport
from lambdas.ingest.events import Heartbeat, parse_message
from lambdas.ingest.handler import Dependencies, handle
from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA, ModelRecord, ModelStatus, model_item
from tests.lambdas.ingest.conftest import Aws
from tests.lambdas.ingest.helpers import REGION, Clock, heartbeat_payload
from tests.lambdas.ingest.test_drift import training_metrics

LINEAGE = "edgeml-lineage"
MODEL = "20261124T201500Z-3f2a9c1d"
NAMESPACE = "EdgeML/edgeml-test"


def distribution(counts: list[int], means: tuple[float, float] = (13.0, -0.25)) -> dict[str, Any]:
    return {
        "windows": sum(counts),
        "score": {"mean": 0.5, "std": 0.2, "min": 0.0, "max": 3.0},
        "score_histogram": {"edges_x_threshold": [0.5, 1.0], "counts": counts},
        "inputs": {"temperature": {"mean": means[0]}, "pressure": {"mean": means[1]}},
    }


def register(dynamodb: Any, model_version: str = MODEL, metrics: dict[str, Any] | None = None) -> None:
    record = ModelRecord(
        model_version=model_version,
        model_name="pump",
        model_uri=f"s3://store/models/pump/{model_version}/model.onnx",
        sha256="0" * 64,
        status=ModelStatus.CANARY,
        created_at="2026-11-24T20:15:00.000000Z",
        updated_at="2026-11-24T20:15:00.000000Z",
        training_metrics=training_metrics() if metrics is None else metrics,
    )
    dynamodb.put_item(TableName=LINEAGE, Item=model_item(record))


@pytest.fixture
def lineage(aws: Aws) -> Any:
    aws.dynamodb.create_table(**LINEAGE_TABLE_SCHEMA.create_table_kwargs(LINEAGE))
    return aws.dynamodb


def _heartbeat(**overrides: Any) -> Heartbeat:
    message = parse_message(heartbeat_payload(distribution=distribution([25, 50, 25]), **overrides))
    assert isinstance(message, Heartbeat)
    return message


def test_profile_is_read_from_the_registry_and_kept(lineage: Any) -> None:
    register(lineage)
    profiles = RegistryTrainingProfiles(LINEAGE, client=lineage)

    first = profiles.profile(MODEL)
    lineage.delete_item(TableName=LINEAGE, Key={"pk": {"S": f"MODEL#{MODEL}"}, "sk": {"S": "MODEL"}})

    assert first is not None
    assert first.threshold == 2.0
    assert profiles.profile(MODEL) is first  # a model's training metrics never change: no second read


def test_unknown_model_is_not_kept(lineage: Any) -> None:
    profiles = RegistryTrainingProfiles(LINEAGE, client=lineage)
    assert profiles.profile(MODEL) is None
    register(lineage)
    found = profiles.profile(MODEL)
    assert found is not None
    assert found.input_center == (10.0, 0.0)


def test_model_without_score_quantiles_has_no_profile(lineage: Any) -> None:
    register(lineage, metrics={"n_windows": 10})
    assert RegistryTrainingProfiles(LINEAGE, client=lineage).profile(MODEL) is None


def test_heartbeat_is_stored_with_its_drift_and_emitted(aws: Aws, lineage: Any) -> None:
    register(lineage)
    lines: list[str] = []

    result = ingest_heartbeat(
        _heartbeat(),
        store=aws.store(),
        clock=Clock(),
        ttl_days=7,
        training=RegistryTrainingProfiles(LINEAGE, client=lineage),
        metrics=EmfDriftMetrics(NAMESPACE, write=lines.append),
    )

    assert result.drift is not None
    assert result.drift.score_psi == pytest.approx(2.128516, abs=1e-6)
    [item] = aws.items_of_kind("heartbeat")
    drift = item["drift"]["M"]
    assert drift["model_version"] == {"S": MODEL}
    assert float(drift["score_psi"]["N"]) == pytest.approx(2.128516, abs=1e-6)
    assert drift["over_threshold_fraction"] == {"N": "0.25"}
    assert float(drift["over_threshold_ratio"]["N"]) == pytest.approx(250.0)
    assert drift["input_shift"] == {"N": "1.5"}
    assert drift["input_shift_by_channel"] == {"L": [{"N": "1.5"}, {"N": "0.5"}]}
    [line] = lines
    emf = json.loads(line)
    [directive] = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    # No dimensions: the fleet alarms watch the namespace-level metric.
    assert directive["Dimensions"] == [[]]
    assert {m["Name"] for m in directive["Metrics"]} == {
        "HeartbeatScorePsi",
        "HeartbeatInputShift",
        "HeartbeatOverThresholdRatio",
    }
    assert emf["HeartbeatScorePsi"] == [pytest.approx(2.128516, abs=1e-6)]
    assert emf["HeartbeatInputShift"] == [1.5]
    assert emf["model_version"] == MODEL


def test_unknown_model_stores_the_heartbeat_without_drift(aws: Aws, lineage: Any) -> None:
    lines: list[str] = []
    result = ingest_heartbeat(
        _heartbeat(),
        store=aws.store(),
        clock=Clock(),
        ttl_days=7,
        training=RegistryTrainingProfiles(LINEAGE, client=lineage),
        metrics=EmfDriftMetrics(NAMESPACE, write=lines.append),
    )
    assert result.drift is None
    assert result.drift_skipped == f"no training metrics recorded for model {MODEL}"
    [item] = aws.items_of_kind("heartbeat")
    assert "drift" not in item
    assert lines == []


def test_metrics_skip_unknown_statistics() -> None:
    lines: list[str] = []
    report = DriftReport("v1", 10, None, None, None, 2.0, (2.0,))
    EmfDriftMetrics(NAMESPACE, write=lines.append).emit(report)
    [directive] = json.loads(lines[0])["_aws"]["CloudWatchMetrics"]
    assert [m["Name"] for m in directive["Metrics"]] == ["HeartbeatInputShift"]
    lines.clear()
    EmfDriftMetrics(NAMESPACE, write=lines.append).emit(DriftReport("v1", 10, None, None, None, None, ()))
    assert lines == []


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"model_version": None}, "the heartbeat names no model_version"),
        ({"distribution": None}, "the heartbeat carries no distribution"),
    ],
)
def test_handler_reports_why_no_drift(aws: Aws, lineage: Any, overrides: dict[str, Any], reason: str) -> None:
    deps = Dependencies(
        config=aws.config,
        store=aws.store(),
        archive=aws.archive(),
        alerts=aws.alerts(),
        clock=Clock(),
        training=RegistryTrainingProfiles(LINEAGE, client=lineage),
    )
    payload = heartbeat_payload(distribution=distribution([25, 50, 25]))
    payload.update(overrides)
    result = handle(payload, deps)
    assert result["drift"] is None
    assert result["drift_skipped"] == reason


def test_handler_returns_the_drift_report(aws: Aws, lineage: Any) -> None:
    register(lineage)
    deps = Dependencies(
        config=aws.config,
        store=aws.store(),
        archive=aws.archive(),
        alerts=aws.alerts(),
        clock=Clock(),
        training=RegistryTrainingProfiles(LINEAGE, client=boto3.client("dynamodb", region_name=REGION)),
    )
    result = handle(heartbeat_payload(distribution=distribution([50, 50, 0], means=(10.0, 0.0))), deps)
    assert result["kind"] == "heartbeat"
    assert result["drift"] == {
        "model_version": MODEL,
        "windows": 100,
        "score_psi": 0.0,
        "over_threshold_fraction": 0.0,
        "over_threshold_ratio": 0.0,
        "input_shift": 0.0,
        "input_shift_by_channel": [0.0, 0.0],
    }
