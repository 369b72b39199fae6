"""Per-environment settings, read once from CDK context into one frozen object.

cdk.json holds ``context.environments.<name>``; ``-c env=<name>`` (or ``CDK_CONTEXT_JSON``) picks one.
Everything here is plain data: no account or region lookups, so synth works offline and stays
environment-agnostic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from lambdas.lifecycle.errors import ConfigError as LifecycleConfigError
from lambdas.lifecycle.gate import GatePolicy
from lambdas.lifecycle.health import HealthPolicy

ENV_CONTEXT_KEY = "env"
ENVIRONMENTS_CONTEXT_KEY = "environments"
DEFAULT_ENV = "dev"

# Fixed by docs/contracts.md §3; infrastructure and code must agree on them.
MODEL_COMPONENT_NAME = "com.edgeml.AnomalyModel"
INFERENCE_COMPONENT_NAME = "com.edgeml.AnomalyDetector"

# S3 bucket names allow lowercase letters, digits and hyphens; the account and region are appended.
_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,23}$")
_THING_GROUP_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The retention periods CloudWatch Logs accepts.
LOG_RETENTION_DAYS = frozenset({1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653})
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Training jobs run at most 28 days; a cooldown beyond that would never end within a job's life anyway.
MAX_RETRAIN_COOLDOWN_HOURS = 28 * 24
# The lifecycle check's interval bounds Lambda's maximum event age (6 h), see infra/parts/lifecycle.py.
MAX_LIFECYCLE_SCHEDULE_MINUTES = 360


_E = TypeVar("_E", bound=Enum)


class ConfigError(ValueError):
    """The CDK context does not describe a usable environment."""


class Removal(Enum):
    """What happens to stateful resources when a stack is deleted."""

    DESTROY = "destroy"  # dev: buckets are emptied and removed with the stack
    RETAIN = "retain"  # prod: data outlives the stack


class DeployTarget(Enum):
    """Which thing group the publisher deploys a new model to first."""

    CANARY = "canary"
    FLEET = "fleet"


@dataclass(frozen=True)
class PlatformConfig:
    env_name: str
    name_prefix: str
    canary_thing_group_name: str
    fleet_thing_group_name: str
    publisher_target: DeployTarget
    removal: Removal
    log_retention_days: int
    publisher_reserved_concurrency: int
    noncurrent_version_expiration_days: int
    inference_component_version: str
    alert_email: str | None
    # Anomaly ingest (lambdas/ingest) and the drift alarm.
    ingest_reserved_concurrency: int
    alerts_per_window: int
    alert_window_seconds: int
    heartbeat_ttl_days: int
    archive_expiration_days: int
    drift_anomaly_rate_threshold: float
    # Drift against training (lambdas/ingest/drift.py) and the retraining it triggers (lambdas/retrain).
    drift_score_psi_threshold: float
    drift_input_shift_threshold: float
    retrain_dataset: str
    retrain_model_name: str
    retrain_instance_type: str
    retrain_cooldown_hours: int
    # The scheduled model-lifecycle check (lambdas/lifecycle/handler.py).
    auto_rollback: bool
    lifecycle_schedule_minutes: int
    # Canonical JSON for GATE_POLICY / HEALTH_POLICY; None keeps the code's defaults.
    gate_policy_json: str | None = None
    health_policy_json: str | None = None

    @property
    def auto_delete_objects(self) -> bool:
        # A bucket with objects cannot be deleted; dev stacks empty theirs so they can be torn down.
        return self.removal is Removal.DESTROY

    @property
    def target_thing_group_name(self) -> str:
        if self.publisher_target is DeployTarget.CANARY:
            return self.canary_thing_group_name
        return self.fleet_thing_group_name

    @classmethod
    def from_context(cls, env_name: str, raw: Mapping[str, Any]) -> PlatformConfig:
        """Build the settings of one environment from its ``context.environments.<env>`` mapping."""
        where = f"context.environments.{env_name}"
        prefix = _text(raw, "namePrefix", where)
        if not _NAME_PREFIX.match(prefix):
            raise ConfigError(
                f"{where}.namePrefix={prefix!r} must be 2-24 lowercase letters, digits or hyphens, "
                "starting with a letter"
            )
        canary = _text(raw, "canaryThingGroup", where)
        fleet = _text(raw, "fleetThingGroup", where)
        for key, group in (("canaryThingGroup", canary), ("fleetThingGroup", fleet)):
            if not _THING_GROUP_NAME.match(group):
                raise ConfigError(f"{where}.{key}={group!r} is not a valid thing group name")
        if canary == fleet:
            raise ConfigError(
                f"{where}: canaryThingGroup and fleetThingGroup must differ, both are {canary!r}"
            )
        version = _text(raw, "inferenceComponentVersion", where)
        if not _SEMVER.match(version):
            raise ConfigError(f"{where}.inferenceComponentVersion={version!r} is not MAJOR.MINOR.PATCH")
        retention_days = _positive_int(raw, "logRetentionDays", where)
        if retention_days not in LOG_RETENTION_DAYS:
            allowed = ", ".join(str(days) for days in sorted(LOG_RETENTION_DAYS))
            raise ConfigError(f"{where}.logRetentionDays={retention_days} is not one of {allowed}")
        drift_threshold = raw.get("driftAnomalyRateThreshold")
        # A fraction of scored windows; bool is a number subclass and never a rate.
        if (
            isinstance(drift_threshold, bool)
            or not isinstance(drift_threshold, int | float)
            or not 0.0 < drift_threshold < 1.0
        ):
            raise ConfigError(
                f"{where}.driftAnomalyRateThreshold must be a fraction in (0, 1), got {drift_threshold!r}"
            )
        auto_rollback = raw.get("autoRollback")
        if not isinstance(auto_rollback, bool):
            raise ConfigError(f"{where}.autoRollback must be true or false, got {auto_rollback!r}")
        schedule_minutes = _positive_int(raw, "lifecycleScheduleMinutes", where)
        if schedule_minutes > MAX_LIFECYCLE_SCHEDULE_MINUTES:
            raise ConfigError(
                f"{where}.lifecycleScheduleMinutes={schedule_minutes} exceeds "
                f"{MAX_LIFECYCLE_SCHEDULE_MINUTES} (Lambda keeps an event at most 6 hours)"
            )
        email = raw.get("alertEmail")
        if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
            raise ConfigError(f"{where}.alertEmail={email!r} is not an e-mail address (or null)")
        return cls(
            env_name=env_name,
            name_prefix=prefix,
            canary_thing_group_name=canary,
            fleet_thing_group_name=fleet,
            publisher_target=_enum(DeployTarget, raw, "publisherTarget", where),
            removal=_enum(Removal, raw, "removalPolicy", where),
            log_retention_days=retention_days,
            publisher_reserved_concurrency=_positive_int(raw, "publisherReservedConcurrency", where),
            noncurrent_version_expiration_days=_positive_int(raw, "noncurrentVersionExpirationDays", where),
            inference_component_version=version,
            alert_email=email,
            ingest_reserved_concurrency=_positive_int(raw, "ingestReservedConcurrency", where),
            alerts_per_window=_positive_int(raw, "alertsPerWindow", where),
            alert_window_seconds=_positive_int(raw, "alertWindowSeconds", where),
            heartbeat_ttl_days=_positive_int(raw, "heartbeatTtlDays", where),
            archive_expiration_days=_positive_int(raw, "archiveExpirationDays", where),
            drift_anomaly_rate_threshold=float(drift_threshold),
            drift_score_psi_threshold=_positive_number(raw, "driftScorePsiThreshold", where),
            drift_input_shift_threshold=_positive_number(raw, "driftInputShiftThreshold", where),
            **_retrain_settings(raw, where),
            auto_rollback=auto_rollback,
            lifecycle_schedule_minutes=schedule_minutes,
            gate_policy_json=_policy_json(raw, "gatePolicy", where, GatePolicy.parse),
            health_policy_json=_policy_json(raw, "healthPolicy", where, HealthPolicy.parse),
        )


def select_environment(context: Mapping[str, Any]) -> PlatformConfig:
    """Pick the environment named by the ``env`` context key (default ``dev``) and read its settings."""
    env_name = context.get(ENV_CONTEXT_KEY) or DEFAULT_ENV
    if not isinstance(env_name, str):
        raise ConfigError(f"context {ENV_CONTEXT_KEY}={env_name!r} must be a string")
    environments = context.get(ENVIRONMENTS_CONTEXT_KEY)
    if not isinstance(environments, Mapping):
        raise ConfigError(f"context.{ENVIRONMENTS_CONTEXT_KEY} is missing or not an object")
    raw = environments.get(env_name)
    if not isinstance(raw, Mapping):
        known = ", ".join(sorted(environments))
        raise ConfigError(f"unknown environment {env_name!r}: context.environments has {known}")
    return PlatformConfig.from_context(env_name, raw)


def read_cdk_json_context(path: Path) -> dict[str, Any]:
    """The ``context`` of cdk.json, so ``python app.py`` sees the same settings and flags as the CDK CLI."""
    document = json.loads(path.read_text(encoding="utf-8"))
    context = document.get("context", {})
    if not isinstance(context, dict):
        raise ConfigError(f"{path}: 'context' must be an object")
    return context


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _positive_int(raw: Mapping[str, Any], key: str, where: str) -> int:
    value = raw.get(key)
    # bool is an int subclass; "true" is not a retention period.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}.{key} must be a positive integer, got {value!r}")
    return value


def _retrain_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The retrain function's settings (lambdas/retrain/config.py checks the same again at run time)."""
    names = {key: _text(raw, key, where) for key in ("retrainDataset", "retrainModelName")}
    for key, name in names.items():
        if not _DATASET_NAME.match(name):
            raise ConfigError(f"{where}.{key}={name!r} must be 1-128 characters of A-Z a-z 0-9 . _ -")
    instance_type = _text(raw, "retrainInstanceType", where)
    if not instance_type.startswith("ml."):
        raise ConfigError(f"{where}.retrainInstanceType={instance_type!r} is not like ml.m5.large")
    cooldown = _positive_int(raw, "retrainCooldownHours", where)
    if cooldown > MAX_RETRAIN_COOLDOWN_HOURS:
        raise ConfigError(
            f"{where}.retrainCooldownHours={cooldown} exceeds {MAX_RETRAIN_COOLDOWN_HOURS} (28 days)"
        )
    return {
        "retrain_dataset": names["retrainDataset"],
        "retrain_model_name": names["retrainModelName"],
        "retrain_instance_type": instance_type,
        "retrain_cooldown_hours": cooldown,
    }


def _positive_number(raw: Mapping[str, Any], key: str, where: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where}.{key} must be a number > 0, got {value!r}")
    return float(value)


def _policy_json(raw: Mapping[str, Any], key: str, where: str, parse: Callable[[str], object]) -> str | None:
    """An optional policy object as the JSON the lifecycle reads, checked by the lifecycle's own parser
    so a bad policy stops synth instead of every scheduled run."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} must be an object (or null), got {value!r}")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    try:
        parse(text)
    except LifecycleConfigError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None
    return text


def _enum(kind: type[_E], raw: Mapping[str, Any], key: str, where: str) -> _E:
    value = raw.get(key)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in kind)
        raise ConfigError(f"{where}.{key}={value!r} must be one of {allowed}") from None
