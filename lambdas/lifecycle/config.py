"""The lifecycle's settings: environment variable names in one place, read once into a frozen object.

The publisher reads the same variables when ``LINEAGE_TABLE`` is set, so the publish step and the
promote / rollback commands agree on the groups, components and policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.lifecycle.errors import ConfigError
from lambdas.lifecycle.gate import DEFAULT_GATE_POLICY, GatePolicy
from lambdas.lifecycle.health import HealthPolicy
from lambdas.publisher.config import (
    DEFAULT_INFERENCE_COMPONENT_NAME,
    DEFAULT_MODEL_COMPONENT_NAME,
    ENV_INFERENCE_COMPONENT_NAME,
    ENV_MODEL_COMPONENT_NAME,
    ENV_TARGET_THING_GROUP_ARN,
    ThingGroupArn,
)
from lambdas.publisher.core import RolloutPolicy
from lambdas.publisher.errors import ConfigError as PublisherConfigError

ENV_LINEAGE_TABLE = "LINEAGE_TABLE"
ENV_CANARY_THING_GROUP_ARN = "CANARY_THING_GROUP_ARN"
ENV_FLEET_THING_GROUP_ARN = "FLEET_THING_GROUP_ARN"
ENV_GATE_POLICY = "GATE_POLICY"
ENV_HEALTH_POLICY = "HEALTH_POLICY"
ENV_EVENTS_TABLE = "EVENTS_TABLE"
ENV_AUTO_ROLLBACK = "AUTO_ROLLBACK"
# Optional: the CloudWatch namespace of the scheduled check's LifecycleNeedsAttention metric (EMF log
# lines); unset, none is emitted. The same variable name and CDK value as the ingest function's drift
# metrics, so the platform's own metrics share one namespace per environment.
ENV_METRICS_NAMESPACE = "METRICS_NAMESPACE"

# A canary is small: one failed device is a signal, so the job stops at the first failure, and the
# devices are few enough to notify at once.
CANARY_ROLLOUT = RolloutPolicy(
    abort_threshold_percentage=1.0,
    abort_min_executed_things=1,
    rollout_base_rate_per_minute=5,
    rollout_increment_factor=2.0,
    rollout_rate_increase_after_succeeded=2,
    rollout_maximum_per_minute=20,
)
# The fleet: start slowly and speed up as devices succeed; stop sending the job once 5 % of at least
# 10 devices have failed (those devices roll back on their own, the rest never receive it).
FLEET_ROLLOUT = RolloutPolicy(
    abort_threshold_percentage=5.0,
    abort_min_executed_things=10,
    rollout_base_rate_per_minute=10,
    rollout_increment_factor=2.0,
    rollout_rate_increase_after_succeeded=10,
    rollout_maximum_per_minute=200,
)
# A rollback restores a known-good model: no pacing, and it is not aborted by a few offline devices.
ROLLBACK_ROLLOUT = RolloutPolicy(abort_threshold_percentage=50.0, abort_min_executed_things=10)


@dataclass(frozen=True)
class LifecycleConfig:
    lineage_table: str
    canary: ThingGroupArn
    fleet: ThingGroupArn
    model_component_name: str
    inference_component_name: str
    gate: GatePolicy
    health: HealthPolicy
    events_table: str | None
    auto_rollback: bool
    metrics_namespace: str | None = None
    canary_rollout: RolloutPolicy = CANARY_ROLLOUT
    fleet_rollout: RolloutPolicy = FLEET_ROLLOUT
    rollback_rollout: RolloutPolicy = ROLLBACK_ROLLOUT

    def group(self, name_or_arn: str) -> ThingGroupArn:
        """``canary``, ``fleet``, a thing-group name in the same account, or a thing-group ARN."""
        if name_or_arn == "canary":
            return self.canary
        if name_or_arn == "fleet":
            return self.fleet
        if name_or_arn.startswith("arn:"):
            return _arn(name_or_arn, "group")
        fleet = self.fleet
        return _arn(
            f"arn:{fleet.partition}:iot:{fleet.region}:{fleet.account}:thinggroup/{name_or_arn}", "group"
        )


def load_config(environ: Mapping[str, str]) -> LifecycleConfig:
    canary_text = (
        environ.get(ENV_CANARY_THING_GROUP_ARN, "").strip()
        or environ.get(ENV_TARGET_THING_GROUP_ARN, "").strip()
    )
    if not canary_text:
        raise ConfigError(
            f"environment variable {ENV_CANARY_THING_GROUP_ARN} (or {ENV_TARGET_THING_GROUP_ARN}) is required"
        )
    canary = _arn(canary_text, ENV_CANARY_THING_GROUP_ARN)
    fleet = _arn(_required(environ, ENV_FLEET_THING_GROUP_ARN), ENV_FLEET_THING_GROUP_ARN)
    if canary.arn == fleet.arn:
        raise ConfigError(f"the canary and fleet thing groups must differ, both are {canary.arn}")
    gate_text = environ.get(ENV_GATE_POLICY, "").strip()
    health_text = environ.get(ENV_HEALTH_POLICY, "").strip()
    auto_rollback = environ.get(ENV_AUTO_ROLLBACK, "").strip().lower() or "false"
    if auto_rollback not in {"true", "false"}:
        raise ConfigError(f"{ENV_AUTO_ROLLBACK}={auto_rollback!r} must be true or false")
    return LifecycleConfig(
        lineage_table=_required(environ, ENV_LINEAGE_TABLE),
        canary=canary,
        fleet=fleet,
        model_component_name=environ.get(ENV_MODEL_COMPONENT_NAME, "").strip()
        or DEFAULT_MODEL_COMPONENT_NAME,
        inference_component_name=environ.get(ENV_INFERENCE_COMPONENT_NAME, "").strip()
        or DEFAULT_INFERENCE_COMPONENT_NAME,
        gate=GatePolicy.parse(gate_text) if gate_text else DEFAULT_GATE_POLICY,
        health=HealthPolicy.parse(health_text) if health_text else HealthPolicy(),
        events_table=environ.get(ENV_EVENTS_TABLE, "").strip() or None,
        auto_rollback=auto_rollback == "true",
        metrics_namespace=environ.get(ENV_METRICS_NAMESPACE, "").strip() or None,
    )


def _arn(text: str, where: str) -> ThingGroupArn:
    try:
        return ThingGroupArn.parse(text)
    except PublisherConfigError as exc:
        raise ConfigError(f"{where}: {text!r} is not a thing-group ARN") from exc


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is required and is not set")
    return value
