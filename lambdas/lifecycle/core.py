"""Model lifecycle: gated publish to the canary group, canary health, promotion, rollback, "what runs where".

Pure orchestration over ports (registry, Greengrass deployments, fleet status, heartbeats); no AWS SDK.
As in the publisher, everything that can refuse runs before anything is written, and each command is
safe to repeat: a retried promote or rollback finds its deployment already in place and records it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Protocol

from lambdas.lifecycle.config import LifecycleConfig
from lambdas.lifecycle.errors import NotFoundError, PromotionRefusedError, RollbackRefusedError
from lambdas.lifecycle.gate import GateDecision, evaluate_gate
from lambdas.lifecycle.health import (
    CanaryHealth,
    DeviceReport,
    EffectiveDeployment,
    ExpectedRollout,
    HealthState,
    HeartbeatSample,
    assess_device,
)
from lambdas.lifecycle.registry import DeploymentRecord, ModelRecord, ModelStatus, Registry, Stage, utc_text
from lambdas.publisher.config import PublisherConfig, ThingGroupArn
from lambdas.publisher.core import (
    ComponentRegistry,
    ComponentVersionRef,
    Deployment,
    DeploymentService,
    ModelStore,
    PublishResult,
    RolloutPolicy,
    WaitPolicy,
    component_arn,
    load_and_validate,
    plan_model_deployment,
    publish_model,
    same_components,
)
from lambdas.publisher.errors import ArtifactConflictError
from lambdas.publisher.events import PublishRequest

Clock = Callable[[], datetime]
_DEFAULT_WAIT = WaitPolicy()
_NOT_PROMOTABLE = frozenset({ModelStatus.REJECTED, ModelStatus.ROLLED_BACK, ModelStatus.SUPERSEDED})


# --- ports -------------------------------------------------------------------------------------------


class Deployments(DeploymentService, Protocol):
    def get(self, deployment_id: str) -> Deployment: ...


class Fleet(Protocol):
    def things_in_group(self, group: ThingGroupArn) -> list[str]: ...

    def device(self, thing_name: str) -> DeviceReport: ...


class Heartbeats(Protocol):
    def recent(self, thing_name: str) -> list[HeartbeatSample]:
        """The device's most recent heartbeats, oldest first."""
        ...


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishOutcome:
    outcome: str  # "published", "rejected" or "duplicate"
    model: ModelRecord
    gate: GateDecision | None = None
    deployment_id: str | None = None
    publish: PublishResult | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "model": self.model.to_dict(),
            "gate": asdict(self.gate) if self.gate is not None else None,
            "deployment_id": self.deployment_id,
            "publish": self.publish.to_dict() if self.publish is not None else None,
        }


@dataclass(frozen=True)
class PromotionResult:
    outcome: str  # "promoted", "already-promoted" or "dry-run"
    model_version: str
    component_version: str
    deployment_id: str | None
    health: CanaryHealth | None

    def to_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "model_version": self.model_version,
            "component_version": self.component_version,
            "deployment_id": self.deployment_id,
            "health": self.health.to_dict() if self.health is not None else None,
        }


@dataclass(frozen=True)
class RollbackResult:
    target_arn: str
    from_model_version: str
    to_model_version: str
    to_component_version: str
    deployment_id: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceView:
    thing_name: str
    registered: bool
    deployments: tuple[EffectiveDeployment, ...]
    model_component_version: str | None
    model_component_state: str | None
    model_version: str | None
    training_job: str | None
    inference_component_version: str | None
    inference_component_state: str | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class GroupView:
    target_arn: str
    deployment: DeploymentRecord | None
    model: ModelRecord | None
    devices: tuple[DeviceView, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "target_arn": self.target_arn,
            "deployment": self.deployment.to_dict() if self.deployment is not None else None,
            "model": self.model.to_dict() if self.model is not None else None,
            "devices": [d.to_dict() for d in self.devices],
        }


# --- registry reads ----------------------------------------------------------------------------------


def current_deployment(registry: Registry, target_arn: str) -> DeploymentRecord | None:
    history = registry.deployments_for_target(target_arn, limit=1)
    return history[0] if history else None


def production_model(registry: Registry, lifecycle: LifecycleConfig) -> ModelRecord | None:
    """The model the fleet group runs, as recorded."""
    deployment = current_deployment(registry, lifecycle.fleet.arn)
    return registry.get_model(deployment.model_version) if deployment is not None else None


def model_lineage(registry: Registry, model_version: str) -> tuple[ModelRecord, list[DeploymentRecord]]:
    model = registry.get_model(model_version)
    if model is None:
        raise NotFoundError(f"the registry has no model {model_version!r}")
    return model, registry.deployments_for_model(model_version)


# --- publish -----------------------------------------------------------------------------------------


def publish_gated(
    request: PublishRequest,
    *,
    publisher: PublisherConfig,
    lifecycle: LifecycleConfig,
    store: ModelStore,
    components: ComponentRegistry,
    deployments: DeploymentService,
    registry: Registry,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
    wait: WaitPolicy = _DEFAULT_WAIT,
) -> PublishOutcome:
    """Validate, gate, publish to the canary group and record the lineage.

    A model the registry already knows (a redelivered event, or the ObjectCreated event of the
    version-addressed copy this very publish wrote) changes nothing: re-running the publish could
    move the canary back from a newer model.
    """
    if request.training_job is not None:
        known = registry.model_for_job(request.training_job)
        record = registry.get_model(known) if known is not None else None
        if record is not None:
            return PublishOutcome(outcome="duplicate", model=record)
    _data, model = load_and_validate(request, store=store, max_bytes=publisher.max_model_bytes)
    existing = registry.get_model(model.model_version)
    if existing is not None:
        if existing.sha256 != model.sha256:
            raise ArtifactConflictError(
                f"model_version {model.model_version} is already recorded with sha256 {existing.sha256}; "
                f"{request.uri} has {model.sha256}. Model versions must be unique"
            )
        return PublishOutcome(outcome="duplicate", model=existing)

    now = utc_text(clock())
    decision = evaluate_gate(lifecycle.gate, model.training_metrics, production_model(registry, lifecycle))
    base = ModelRecord(
        model_version=model.model_version,
        model_name=request.model_name,
        model_uri=request.uri,
        sha256=model.sha256,
        status=ModelStatus.REJECTED,
        created_at=now,
        updated_at=now,
        training_job=request.training_job,
        training_metrics=dict(model.training_metrics),
    )
    if not decision.passed:
        rejected = replace(base, reason=decision.summary)
        registry.record_rejection(rejected)
        return PublishOutcome(outcome="rejected", model=rejected, gate=decision)

    result = publish_model(
        request,
        config=replace(publisher, target=lifecycle.canary),
        store=store,
        components=components,
        deployments=deployments,
        sleep=sleep,
        wait=wait,
        rollout=lifecycle.canary_rollout,
    )
    published = replace(
        base,
        model_uri=result.model_uri,
        status=ModelStatus.CANARY,
        reason=decision.summary,
        component_name=result.component_name,
        component_version=result.component_version,
        component_arn=result.component_arn,
    )
    deployment = DeploymentRecord(
        deployment_id=result.deployment_id,
        target_arn=result.target_arn,
        stage=Stage.CANARY,
        model_version=model.model_version,
        component_name=result.component_name,
        component_version=result.component_version,
        created_at=now,
        created_by="publisher",
        inference_component_version=publisher.inference_component_version,
    )
    registry.record_publication(published, deployment)
    return PublishOutcome(
        outcome="published",
        model=published,
        gate=decision,
        deployment_id=result.deployment_id,
        publish=result,
    )


# --- canary health and promotion ---------------------------------------------------------------------


def assess_canary(
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    deployment: DeploymentRecord,
) -> CanaryHealth:
    production = production_model(registry, lifecycle)
    baseline = production.model_version if production is not None else None
    expected = ExpectedRollout(
        target_arn=lifecycle.canary.arn,
        deployment_id=deployment.deployment_id,
        model_component=deployment.component_name,
        model_component_version=deployment.component_version,
        inference_component=lifecycle.inference_component_name,
        model_version=deployment.model_version,
        baseline_model_version=baseline if baseline != deployment.model_version else None,
    )
    devices = tuple(
        assess_device(
            fleet.device(thing),
            expected,
            heartbeats=heartbeats.recent(thing) if heartbeats is not None else None,
            policy=lifecycle.health,
        )
        for thing in sorted(fleet.things_in_group(lifecycle.canary))
    )
    return CanaryHealth(
        target_arn=lifecycle.canary.arn,
        deployment_id=deployment.deployment_id,
        model_version=deployment.model_version,
        devices=devices,
    )


def canary_candidate(
    registry: Registry, lifecycle: LifecycleConfig, expected_model_version: str | None = None
) -> tuple[DeploymentRecord, ModelRecord]:
    deployment = current_deployment(registry, lifecycle.canary.arn)
    if deployment is None:
        raise PromotionRefusedError(f"nothing has been deployed to the canary group {lifecycle.canary.name}")
    model = registry.get_model(deployment.model_version)
    if model is None:
        raise NotFoundError(f"the canary runs model {deployment.model_version}, which the registry lacks")
    if expected_model_version is not None and expected_model_version != model.model_version:
        raise PromotionRefusedError(
            f"the canary group runs model {model.model_version}, not {expected_model_version}"
        )
    return deployment, model


def promote(
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    deployments: Deployments,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    clock: Clock,
    expected_model_version: str | None = None,
    dry_run: bool = False,
    actor: str = "promote",
) -> PromotionResult:
    """Deploy the canary's model to the fleet group if every canary device is healthy.

    Raises ``PromotionRefusedError`` (with per-device reasons) when the canary is pending or failed.
    """
    canary, model = canary_candidate(registry, lifecycle, expected_model_version)
    current_fleet = current_deployment(registry, lifecycle.fleet.arn)
    if current_fleet is not None and current_fleet.model_version == model.model_version:
        return PromotionResult(
            outcome="already-promoted",
            model_version=model.model_version,
            component_version=canary.component_version,
            deployment_id=current_fleet.deployment_id,
            health=None,
        )
    if model.status in _NOT_PROMOTABLE:
        raise PromotionRefusedError(f"model {model.model_version} is {model.status}; it is not promoted")
    health = assess_canary(
        lifecycle=lifecycle, registry=registry, fleet=fleet, heartbeats=heartbeats, deployment=canary
    )
    if health.state is not HealthState.HEALTHY:
        raise PromotionRefusedError(
            f"canary {lifecycle.canary.name} is {health.state} for model {model.model_version}: "
            "not promoting",
            reasons=health.reasons,
        )
    if dry_run:
        return PromotionResult("dry-run", model.model_version, canary.component_version, None, health)

    canary_deployment = deployments.get(canary.deployment_id)
    inference = canary_deployment.components.get(lifecycle.inference_component_name)
    if inference is None:
        raise PromotionRefusedError(
            f"canary deployment {canary.deployment_id} has no {lifecycle.inference_component_name}"
        )
    deployment_id = _deploy_model(
        deployments,
        target=lifecycle.fleet,
        lifecycle=lifecycle,
        model=model,
        component_version=canary.component_version,
        inference_version=inference.component_version,
        rollout=lifecycle.fleet_rollout,
    )
    changes = {model.model_version: ModelStatus.FLEET}
    if current_fleet is not None:
        changes.setdefault(current_fleet.model_version, ModelStatus.SUPERSEDED)
    registry.record_deployment(
        DeploymentRecord(
            deployment_id=deployment_id,
            target_arn=lifecycle.fleet.arn,
            stage=Stage.FLEET,
            model_version=model.model_version,
            component_name=canary.component_name,
            component_version=canary.component_version,
            created_at=utc_text(clock()),
            created_by=actor,
            inference_component_version=inference.component_version,
            reason=f"canary {canary.deployment_id} healthy on {len(health.devices)} device(s)",
        ),
        status_changes=changes,
    )
    return PromotionResult("promoted", model.model_version, canary.component_version, deployment_id, health)


# --- rollback ----------------------------------------------------------------------------------------


def rollback(
    *,
    lifecycle: LifecycleConfig,
    target: ThingGroupArn,
    registry: Registry,
    deployments: Deployments,
    clock: Clock,
    to_component_version: str | None = None,
    reason: str = "",
    actor: str = "rollback",
) -> RollbackResult:
    """Redeploy an earlier model to the whole group, devices that succeeded with the current one included.

    Greengrass's own ROLLBACK acts per device on failure only; this replaces the group's deployment.
    Without ``to_component_version`` the target is the newest earlier model of this group's history that
    was not itself rolled back or rejected.
    """
    history = registry.deployments_for_target(target.arn)
    if not history:
        raise RollbackRefusedError(f"the registry has no deployment to {target.name}")
    current = history[0]
    chosen = _rollback_model(registry, lifecycle, history, to_component_version)
    if chosen.model_version == current.model_version:
        raise RollbackRefusedError(f"{target.name} already runs model {chosen.model_version}")
    if chosen.component_version is None or chosen.component_name is None:
        raise RollbackRefusedError(f"model {chosen.model_version} was never published as a component")
    latest = deployments.latest_for_target(target.arn)
    inference = latest.components.get(lifecycle.inference_component_name) if latest is not None else None
    if inference is None:
        raise RollbackRefusedError(
            f"the latest deployment to {target.name} has no {lifecycle.inference_component_name}"
        )
    deployment_id = _deploy_model(
        deployments,
        target=target,
        lifecycle=lifecycle,
        model=chosen,
        component_version=chosen.component_version,
        inference_version=inference.component_version,
        rollout=lifecycle.rollback_rollout,
    )
    changes = {current.model_version: ModelStatus.ROLLED_BACK}
    if target.arn == lifecycle.fleet.arn:
        changes[chosen.model_version] = ModelStatus.FLEET
    registry.record_deployment(
        DeploymentRecord(
            deployment_id=deployment_id,
            target_arn=target.arn,
            stage=Stage.ROLLBACK,
            model_version=chosen.model_version,
            component_name=chosen.component_name,
            component_version=chosen.component_version,
            created_at=utc_text(clock()),
            created_by=actor,
            inference_component_version=inference.component_version,
            reason=reason or f"rolled back from {current.model_version}",
        ),
        status_changes=changes,
    )
    return RollbackResult(
        target_arn=target.arn,
        from_model_version=current.model_version,
        to_model_version=chosen.model_version,
        to_component_version=chosen.component_version,
        deployment_id=deployment_id,
    )


def _rollback_model(
    registry: Registry,
    lifecycle: LifecycleConfig,
    history: Sequence[DeploymentRecord],
    to_component_version: str | None,
) -> ModelRecord:
    if to_component_version is not None:
        model_version = registry.model_for_component(lifecycle.model_component_name, to_component_version)
        if model_version is None:
            raise NotFoundError(
                f"the registry has no {lifecycle.model_component_name} version {to_component_version}"
            )
        model = registry.get_model(model_version)
        if model is None:
            raise NotFoundError(f"the registry has no model {model_version!r}")
        if model.status is ModelStatus.REJECTED:
            raise RollbackRefusedError(f"model {model_version} was rejected by the gate")
        return model
    current = history[0].model_version
    for record in history[1:]:
        if record.model_version == current:
            continue
        model = registry.get_model(record.model_version)
        if model is not None and model.status not in {ModelStatus.ROLLED_BACK, ModelStatus.REJECTED}:
            return model
    raise RollbackRefusedError(f"no earlier model to roll back to in the history of {history[0].target_arn}")


def _deploy_model(
    deployments: DeploymentService,
    *,
    target: ThingGroupArn,
    lifecycle: LifecycleConfig,
    model: ModelRecord,
    component_version: str,
    inference_version: str,
    rollout: RolloutPolicy,
) -> str:
    ref = ComponentVersionRef(
        name=lifecycle.model_component_name,
        version=component_version,
        arn=f"{component_arn(target, lifecycle.model_component_name)}:versions:{component_version}",
    )
    latest = deployments.latest_for_target(target.arn)
    plan = plan_model_deployment(
        latest,
        target=target,
        inference_component_name=lifecycle.inference_component_name,
        inference_component_version=inference_version,
        model_component=ref,
        model_configuration={
            "component": ref.name,
            "version": ref.version,
            "sha256": model.sha256,
            "modelVersion": model.model_version,
        },
        rollout=rollout,
    )
    # A retry after a crash between create and record finds its own deployment already in place.
    if latest is not None and same_components(latest.components, plan.components):
        return latest.deployment_id
    return deployments.create(plan)


# --- what runs where ---------------------------------------------------------------------------------


def device_view(
    thing_name: str, *, lifecycle: LifecycleConfig, registry: Registry, fleet: Fleet
) -> DeviceView:
    """One device: its effective deployments and installed model, joined with the registry's lineage."""
    report = fleet.device(thing_name)
    model_component = report.component(lifecycle.model_component_name)
    inference = report.component(lifecycle.inference_component_name)
    model_version = training_job = None
    if model_component is not None:
        model_version = registry.model_for_component(model_component.name, model_component.version)
        model = registry.get_model(model_version) if model_version is not None else None
        training_job = model.training_job if model is not None else None
    return DeviceView(
        thing_name=thing_name,
        registered=report.registered,
        deployments=report.effective,
        model_component_version=model_component.version if model_component else None,
        model_component_state=model_component.lifecycle_state if model_component else None,
        model_version=model_version,
        training_job=training_job,
        inference_component_version=inference.version if inference else None,
        inference_component_state=inference.lifecycle_state if inference else None,
    )


def group_view(
    group: ThingGroupArn, *, lifecycle: LifecycleConfig, registry: Registry, fleet: Fleet
) -> GroupView:
    """A group: its recorded deployment and model (with training job), and what each member runs."""
    deployment = current_deployment(registry, group.arn)
    model = registry.get_model(deployment.model_version) if deployment is not None else None
    devices = tuple(
        device_view(thing, lifecycle=lifecycle, registry=registry, fleet=fleet)
        for thing in sorted(fleet.things_in_group(group))
    )
    return GroupView(target_arn=group.arn, deployment=deployment, model=model, devices=devices)


def overview(registry: Registry, lifecycle: LifecycleConfig) -> dict[str, object]:
    """The canary's and the fleet's recorded deployment and model."""
    result: dict[str, object] = {}
    for label, group in (("canary", lifecycle.canary), ("fleet", lifecycle.fleet)):
        deployment = current_deployment(registry, group.arn)
        model = registry.get_model(deployment.model_version) if deployment is not None else None
        result[label] = {
            "target_arn": group.arn,
            "deployment": deployment.to_dict() if deployment is not None else None,
            "model": model.to_dict() if model is not None else None,
        }
    return result


# --- scheduled check ---------------------------------------------------------------------------------


def check_canary(
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    deployments: Deployments,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    clock: Clock,
) -> Mapping[str, object]:
    """What a scheduled run does: promote a healthy canary, wait on a pending one, and roll back a failed
    one when ``auto_rollback`` is on."""
    try:
        result = promote(
            lifecycle=lifecycle,
            registry=registry,
            deployments=deployments,
            fleet=fleet,
            heartbeats=heartbeats,
            clock=clock,
            actor="scheduled-promote",
        )
    except PromotionRefusedError as refused:
        current = current_deployment(registry, lifecycle.canary.arn)
        if current is None:
            return {"action": "nothing", "reason": str(refused)}
        health = assess_canary(
            lifecycle=lifecycle, registry=registry, fleet=fleet, heartbeats=heartbeats, deployment=current
        )
        if health.state is HealthState.FAILED and lifecycle.auto_rollback:
            rolled = rollback(
                lifecycle=lifecycle,
                target=lifecycle.canary,
                registry=registry,
                deployments=deployments,
                clock=clock,
                reason="canary failed: " + "; ".join(health.reasons),
                actor="scheduled-rollback",
            )
            return {"action": "rolled-back", "reasons": list(health.reasons), **rolled.to_dict()}
        return {"action": "waiting", "reason": str(refused), "reasons": list(refused.reasons)}
    return {"action": result.outcome, **result.to_dict()}
