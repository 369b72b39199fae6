"""infra.config: plain data in, one frozen settings object out, clear errors otherwise."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from infra.config import (
    ConfigError,
    DeployTarget,
    PlatformConfig,
    Removal,
    read_cdk_json_context,
    select_environment,
)
from lambdas.lifecycle.gate import GatePolicy
from lambdas.lifecycle.health import HealthPolicy

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def _dev() -> dict[str, Any]:
    return {
        "namePrefix": "edgeml-test",
        "canaryThingGroup": "test-canary",
        "fleetThingGroup": "test-fleet",
        "publisherTarget": "canary",
        "removalPolicy": "destroy",
        "logRetentionDays": 14,
        "publisherReservedConcurrency": 2,
        "noncurrentVersionExpirationDays": 7,
        "inferenceComponentVersion": "1.2.3",
        "alertEmail": None,
        "ingestReservedConcurrency": 3,
        "alertsPerWindow": 4,
        "alertWindowSeconds": 600,
        "heartbeatTtlDays": 7,
        "archiveExpirationDays": 30,
        "driftAnomalyRateThreshold": 0.05,
        "driftScorePsiThreshold": 0.3,
        "driftInputShiftThreshold": 2.5,
        "retrainDataset": "pumps",
        "retrainModelName": "pump-detector",
        "retrainInstanceType": "ml.c5.xlarge",
        "retrainCooldownHours": 12,
        "autoRollback": True,
        "lifecycleScheduleMinutes": 10,
    }


def test_cdk_json_environments_parse() -> None:
    context = read_cdk_json_context(CDK_JSON)
    dev = select_environment({**context, "env": "dev"})
    prod = select_environment({**context, "env": "prod"})
    assert dev.removal is Removal.DESTROY
    assert dev.auto_delete_objects is True
    assert prod.removal is Removal.RETAIN
    assert prod.auto_delete_objects is False
    assert dev.name_prefix != prod.name_prefix


def test_drift_and_retrain_settings_are_read() -> None:
    config = PlatformConfig.from_context("dev", _dev())
    assert (config.drift_score_psi_threshold, config.drift_input_shift_threshold) == (0.3, 2.5)
    assert (config.retrain_dataset, config.retrain_model_name) == ("pumps", "pump-detector")
    assert (config.retrain_instance_type, config.retrain_cooldown_hours) == ("ml.c5.xlarge", 12)


def test_env_defaults_to_dev() -> None:
    config = select_environment({"environments": {"dev": _dev()}})
    assert config.env_name == "dev"
    assert config.name_prefix == "edgeml-test"
    assert config.inference_component_version == "1.2.3"
    assert config.publisher_target is DeployTarget.CANARY
    assert config.target_thing_group_name == "test-canary"


def test_fleet_target_picks_fleet_group() -> None:
    config = PlatformConfig.from_context("dev", {**_dev(), "publisherTarget": "fleet"})
    assert config.target_thing_group_name == "test-fleet"


def test_ingest_and_drift_settings_are_read() -> None:
    config = PlatformConfig.from_context("dev", _dev())
    assert config.ingest_reserved_concurrency == 3
    assert config.alerts_per_window == 4
    assert config.alert_window_seconds == 600
    assert config.heartbeat_ttl_days == 7
    assert config.archive_expiration_days == 30
    assert config.drift_anomaly_rate_threshold == 0.05
    assert (
        PlatformConfig.from_context(
            "dev", {**_dev(), "driftAnomalyRateThreshold": 0.5}
        ).drift_anomaly_rate_threshold
        == 0.5
    )


def test_cdk_json_prod_keeps_more_and_runs_wider_than_dev() -> None:
    context = read_cdk_json_context(CDK_JSON)
    dev = select_environment({**context, "env": "dev"})
    prod = select_environment({**context, "env": "prod"})
    assert prod.ingest_reserved_concurrency > dev.ingest_reserved_concurrency
    assert prod.archive_expiration_days > dev.archive_expiration_days
    assert prod.heartbeat_ttl_days > dev.heartbeat_ttl_days


def test_lifecycle_settings_are_read() -> None:
    config = PlatformConfig.from_context("dev", _dev())
    assert config.auto_rollback is True
    assert config.lifecycle_schedule_minutes == 10
    # No policy in the context: the lifecycle's own defaults apply (the variables stay unset).
    assert config.gate_policy_json is None
    assert config.health_policy_json is None


def test_cdk_json_rolls_back_automatically_in_dev_only() -> None:
    context = read_cdk_json_context(CDK_JSON)
    assert select_environment({**context, "env": "dev"}).auto_rollback is True
    assert select_environment({**context, "env": "prod"}).auto_rollback is False
    assert select_environment({**context, "env": "prod"}).lifecycle_schedule_minutes == 5


def test_policies_become_canonical_json_the_lifecycle_parses() -> None:
    config = PlatformConfig.from_context(
        "dev",
        {
            **_dev(),
            "gatePolicy": {"regression": None, "floors": {"n_windows": {"min": 500}}},
            "healthPolicy": {"min_windows": 50, "max_rate_ratio": 2.0},
        },
    )
    assert config.gate_policy_json == '{"floors":{"n_windows":{"min":500}},"regression":null}'
    assert config.health_policy_json == '{"max_rate_ratio":2.0,"min_windows":50}'
    assert GatePolicy.parse(config.gate_policy_json).floors[0].minimum == 500
    assert HealthPolicy.parse(config.health_policy_json).min_windows == 50


def test_config_is_frozen() -> None:
    config = PlatformConfig.from_context("dev", _dev())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name_prefix = "other"  # type: ignore[misc]


def test_unknown_environment_names_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown environment 'staging': context.environments has dev, prod"
    ):
        select_environment({"env": "staging", "environments": {"dev": _dev(), "prod": _dev()}})


def test_missing_environments_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"context.environments is missing or not an object"):
        select_environment({"env": "dev"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("namePrefix", "Edge_ML", r"namePrefix='Edge_ML' must be 2-24 lowercase letters"),
        ("removalPolicy", "snapshot", r"removalPolicy='snapshot' must be one of 'destroy', 'retain'"),
        ("publisherTarget", "all", r"publisherTarget='all' must be one of 'canary', 'fleet'"),
        ("logRetentionDays", 10, r"logRetentionDays=10 is not one of 1, 3, 5"),
        ("logRetentionDays", True, r"logRetentionDays must be a positive integer, got True"),
        (
            "publisherReservedConcurrency",
            0,
            r"publisherReservedConcurrency must be a positive integer, got 0",
        ),
        ("inferenceComponentVersion", "1.0", r"inferenceComponentVersion='1.0' is not MAJOR.MINOR.PATCH"),
        ("alertEmail", "ops", r"alertEmail='ops' is not an e-mail address"),
        ("fleetThingGroup", "test-canary", r"canaryThingGroup and fleetThingGroup must differ"),
        ("canaryThingGroup", "", r"canaryThingGroup must be a non-empty string, got ''"),
        ("ingestReservedConcurrency", -1, r"ingestReservedConcurrency must be a positive integer, got -1"),
        ("alertsPerWindow", "5", r"alertsPerWindow must be a positive integer, got '5'"),
        ("heartbeatTtlDays", None, r"heartbeatTtlDays must be a positive integer, got None"),
        (
            "driftAnomalyRateThreshold",
            1.5,
            r"driftAnomalyRateThreshold must be a fraction in \(0, 1\), got 1.5",
        ),
        ("driftAnomalyRateThreshold", 0, r"driftAnomalyRateThreshold must be a fraction in \(0, 1\), got 0"),
        (
            "driftAnomalyRateThreshold",
            True,
            r"driftAnomalyRateThreshold must be a fraction in \(0, 1\), got True",
        ),
        ("driftScorePsiThreshold", 0, r"driftScorePsiThreshold must be a number > 0, got 0"),
        ("driftInputShiftThreshold", "3", r"driftInputShiftThreshold must be a number > 0, got '3'"),
        ("retrainDataset", "../x", r"retrainDataset='../x' must be 1-128 characters of A-Z a-z 0-9 . _ -"),
        ("retrainModelName", None, r"retrainModelName must be a non-empty string, got None"),
        ("retrainInstanceType", "m5.large", r"retrainInstanceType='m5.large' is not like ml.m5.large"),
        ("retrainCooldownHours", 0, r"retrainCooldownHours must be a positive integer, got 0"),
        ("retrainCooldownHours", 1000, r"retrainCooldownHours=1000 exceeds 672 \(28 days\)"),
        ("autoRollback", "true", r"autoRollback must be true or false, got 'true'"),
        ("autoRollback", None, r"autoRollback must be true or false, got None"),
        ("lifecycleScheduleMinutes", 0, r"lifecycleScheduleMinutes must be a positive integer, got 0"),
        (
            "lifecycleScheduleMinutes",
            361,
            r"lifecycleScheduleMinutes=361 exceeds 360 \(Lambda keeps an event at most 6 hours\)",
        ),
        ("gatePolicy", "strict", r"gatePolicy must be an object \(or null\), got 'strict'"),
        (
            "gatePolicy",
            {"floor": {}},
            r"gatePolicy: gate policy must be an object with only \"floors\" and \"regression\"",
        ),
        (
            "healthPolicy",
            {"min_windows": -1},
            r"healthPolicy: health policy min_windows must be >= 0, got -1",
        ),
    ],
)
def test_invalid_settings_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlatformConfig.from_context("dev", {**_dev(), key: value})


def test_cdk_json_context_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "cdk.json"
    path.write_text('{"app": "x", "context": []}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'context' must be an object"):
        read_cdk_json_context(path)
