"""Model lifecycle: gated publish to the canary group, canary health, promotion, rollback, "what runs where".

Pure orchestration over ports (registry, Greengrass deployments, fleet status, heartbeats); no AWS SDK.
As in the publisher, everything that can refuse runs before anything is written, and each command is
safe to repeat: a retried promote or rollback finds its deployment already in place and records it, and
a repeated rollback returns the rollback already done instead of rolling back one more model.

Every command that writes a Greengrass deployment (publish, promote, rollback, the scheduled check) holds
the registry's lifecycle lock while it reads what it acts on and writes, whoever runs it (the Lambdas, the
CLI), and moves a model's status only from the status it read. The canary and fleet groups must not share
devices (their deployments would pin two versions of the model component on one device): promotion
refuses while they do.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from lambdas.lifecycle.config import LifecycleConfig
from lambdas.lifecycle.errors import (
    GroupOverlapError,
    LockHeldError,
    NotFoundError,
    NotPromotableError,
    PromotionRefusedError,
    RefusedError,
    RegistryError,
    RetryableError,
    RollbackRefusedError,
)
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
from lambdas.lifecycle.registry import (
    LOCK_TTL_SECONDS,
    DeploymentRecord,
    LockRecord,
    ModelRecord,
    ModelStatus,
    Registry,
    Stage,
    utc_text,
)
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
_NOT_PROMOTABLE = frozenset(
    {ModelStatus.PUBLISHING, ModelStatus.REJECTED, ModelStatus.ROLLED_BACK, ModelStatus.SUPERSEDED}
)


@dataclass(frozen=True)
class LockPolicy:
    """How long a command waits for the lifecycle lock before giving up (``LockHeldError``)."""

    wait_seconds: float = 0.0
    poll_seconds: float = 2.0


# An operator's promote / rollback waits out a publish or a scheduled check (each takes seconds to a
# minute or two); a publish waits for another publish's component to become deployable; the scheduled
# check does not wait at all: the next tick is its retry.
_log = logging.getLogger("lambdas.lifecycle.core")
RELEASE_ATTEMPTS = 3
RELEASE_BACKOFF_S = 0.5
CLI_LOCK = LockPolicy(wait_seconds=120.0, poll_seconds=2.0)
PUBLISH_LOCK = LockPolicy(wait_seconds=150.0, poll_seconds=5.0)
SCHEDULED_LOCK = LockPolicy()


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


class AttentionMetrics(Protocol):
    def emit(self, *, action: str, attention: str | None) -> None:
        """Record one scheduled check: whether it needs a person (``attention`` is why), and its action."""
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
    outcome: str = "rolled-back"  # or "already-rolled-back": a repeated command changed nothing

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


# --- the lifecycle lock ------------------------------------------------------------------------------


@contextmanager
def lifecycle_lock(
    registry: Registry,
    *,
    owner: str,
    clock: Clock,
    sleep: Callable[[float], None],
    policy: LockPolicy,
    request_id: str | None = None,
) -> Iterator[None]:
    """Hold the registry's lifecycle lock for the block; ``LockHeldError`` if it stays held too long.

    The lock expires ``LOCK_TTL_SECONDS`` after it was taken, so a holder killed before its ``finally``
    blocks the others for at most that long. ``request_id`` (stable across retries of one request, e.g. a
    publish's training job and URI) lets a retry take back the lock its own killed attempt left behind
    instead of waiting it out into the dead-letter queue.
    """
    suffix = hashlib.sha256(request_id.encode()).hexdigest()[:16] if request_id else uuid.uuid4().hex
    token = f"{owner}/{suffix}"
    deadline = clock().timestamp() + policy.wait_seconds
    while True:
        moment = clock()
        now = int(moment.timestamp())
        lock = LockRecord(owner=token, acquired_at=utc_text(moment), expires_at=now + LOCK_TTL_SECONDS)
        holder = registry.acquire_lock(lock, now=now)
        if holder is None:
            break
        if moment.timestamp() >= deadline:
            until = utc_text(datetime.fromtimestamp(holder.expires_at, UTC))
            raise LockHeldError(
                f"{holder.owner} has held the lifecycle lock since {holder.acquired_at} (it expires at "
                f"{until} at the latest); nothing was changed: run the command again"
            )
        sleep(policy.poll_seconds)
    try:
        yield
    finally:
        _release(registry, token, sleep)


def _release(registry: Registry, token: str, sleep: Callable[[float], None]) -> None:
    """Release the lock, retrying a throttled write; never let a failed release replace the command's own
    result or error (the lock then expires on its own)."""
    for attempt in range(RELEASE_ATTEMPTS):
        try:
            registry.release_lock(token)
        except (RetryableError, RegistryError) as exc:
            if isinstance(exc, RetryableError) and attempt + 1 < RELEASE_ATTEMPTS:
                sleep(RELEASE_BACKOFF_S * (attempt + 1))
                continue
            _log.error(
                "could not release the lifecycle lock; it expires on its own",
                extra={"owner": token, "error": str(exc), "expires_within_s": LOCK_TTL_SECONDS},
            )
        return


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
    lock: LockPolicy = PUBLISH_LOCK,
) -> PublishOutcome:
    """Validate, gate, publish to the canary group and record the lineage.

    A model the registry already knows (a redelivered event) changes nothing: re-running the publish
    could move the canary back from a newer model. Before anything is written to S3 or Greengrass the
    model is *claimed* in the registry (a conditional put): the ObjectCreated event of the
    version-addressed copy this very publish writes, which arrives while the publish still waits for its
    component version, finds the claim and is a duplicate. A retry of the same request (same training job
    and URI) resumes its own claim, and a claim older than ``LOCK_TTL_SECONDS`` can be taken over.
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
        if existing.status is not ModelStatus.PUBLISHING:
            return PublishOutcome(outcome="duplicate", model=existing)

    moment = clock()
    now = utc_text(moment)
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

    claimant = f"{request.training_job or '-'} {request.uri}"
    claim = replace(base, status=ModelStatus.PUBLISHING, reason=decision.summary)
    epoch = int(moment.timestamp())
    if not registry.claim_model(claim, claimant=claimant, now=epoch, expires_at=epoch + LOCK_TTL_SECONDS):
        current = registry.get_model(model.model_version)
        return PublishOutcome(outcome="duplicate", model=current or claim, gate=decision)

    with lifecycle_lock(
        registry,
        owner=f"publish {model.model_version}",
        clock=clock,
        sleep=sleep,
        policy=lock,
        request_id=claimant,
    ):
        return _publish_claimed(
            request,
            claimant=claimant,
            base=base,
            decision=decision,
            publisher=publisher,
            lifecycle=lifecycle,
            store=store,
            components=components,
            deployments=deployments,
            registry=registry,
            clock=clock,
            sleep=sleep,
            wait=wait,
        )


def _publish_claimed(
    request: PublishRequest,
    *,
    claimant: str,
    base: ModelRecord,
    decision: GateDecision,
    publisher: PublisherConfig,
    lifecycle: LifecycleConfig,
    store: ModelStore,
    components: ComponentRegistry,
    deployments: DeploymentService,
    registry: Registry,
    clock: Clock,
    sleep: Callable[[float], None],
    wait: WaitPolicy,
) -> PublishOutcome:
    """The Greengrass half of a gated publish: under the lifecycle lock, for a model this request claimed."""
    # A concurrent delivery of this same request may have finished while this one waited for the lock.
    current = registry.get_model(base.model_version)
    if current is not None and current.status is not ModelStatus.PUBLISHING:
        return PublishOutcome(outcome="duplicate", model=current, gate=decision)
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
        model_version=base.model_version,
        component_name=result.component_name,
        component_version=result.component_version,
        # Taken under the lock: a group's history is ordered by it.
        created_at=utc_text(clock()),
        created_by="publisher",
        inference_component_version=publisher.inference_component_version,
    )
    if not registry.record_publication(published, deployment, claimant=claimant):
        current = registry.get_model(base.model_version)
        return PublishOutcome(outcome="duplicate", model=current or published, gate=decision)
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
    canary_things = sorted(fleet.things_in_group(lifecycle.canary))
    refuse_shared_devices(lifecycle, fleet, canary_things)
    devices = tuple(
        assess_device(
            fleet.device(thing),
            expected,
            heartbeats=heartbeats.recent(thing) if heartbeats is not None else None,
            policy=lifecycle.health,
        )
        for thing in canary_things
    )
    return CanaryHealth(
        target_arn=lifecycle.canary.arn,
        deployment_id=deployment.deployment_id,
        model_version=deployment.model_version,
        devices=devices,
    )


def refuse_shared_devices(lifecycle: LifecycleConfig, fleet: Fleet, canary_things: Sequence[str]) -> None:
    """``GroupOverlapError`` if a canary device is also in the fleet group.

    Such a device gets both groups' deployments; they pin different versions of the model component
    while a new model is on the canary, the nucleus cannot resolve both (AWS-FACTS §2.3), and the
    inference component gets two competing ``model`` configurations. Its health would be the overlap's,
    not the model's. A canary device leaves the fleet group (docs/deploy.md §3).
    """
    if not canary_things:
        return
    shared = sorted(set(canary_things) & set(fleet.things_in_group(lifecycle.fleet)))
    if shared:
        canary, fleet_group = lifecycle.canary.name, lifecycle.fleet.name
        raise GroupOverlapError(
            f"{len(shared)} device(s) are in both the canary group {canary} and the fleet group "
            f"{fleet_group}: their two deployments pin different {lifecycle.model_component_name} "
            f"versions, which Greengrass cannot resolve. Remove them from {fleet_group} "
            "(a canary device is not a fleet device) and run the command again",
            reasons=[f"{thing}: in {canary} and in {fleet_group}" for thing in shared],
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
    sleep: Callable[[float], None] = time.sleep,
    lock: LockPolicy = CLI_LOCK,
) -> PromotionResult:
    """Deploy the canary's model to the fleet group if every canary device is healthy.

    Raises ``PromotionRefusedError`` (with per-device reasons) when the canary is pending or failed, and
    ``GroupOverlapError`` when devices are in both groups. Holds the lifecycle lock unless ``dry_run``.
    """

    def run() -> PromotionResult:
        return _promote(
            lifecycle=lifecycle,
            registry=registry,
            deployments=deployments,
            fleet=fleet,
            heartbeats=heartbeats,
            clock=clock,
            expected_model_version=expected_model_version,
            dry_run=dry_run,
            actor=actor,
        )

    if dry_run:
        return run()
    with lifecycle_lock(registry, owner=actor, clock=clock, sleep=sleep, policy=lock):
        return run()


def _promote(
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    deployments: Deployments,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    clock: Clock,
    expected_model_version: str | None,
    dry_run: bool,
    actor: str,
) -> PromotionResult:
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
        raise NotPromotableError(f"model {model.model_version} is {model.status}; it is not promoted")
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
        raise NotPromotableError(
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
    expected = {model.model_version: model.status}
    if current_fleet is not None:
        changes[current_fleet.model_version] = ModelStatus.SUPERSEDED
        superseded = registry.get_model(current_fleet.model_version)
        if superseded is not None:
            expected[superseded.model_version] = superseded.status
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
        expected_statuses=expected,
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
    from_model_version: str | None = None,
    reason: str = "",
    actor: str = "rollback",
    sleep: Callable[[float], None] = time.sleep,
    lock: LockPolicy = CLI_LOCK,
) -> RollbackResult:
    """Redeploy an earlier model to the whole group, devices that succeeded with the current one included.

    Greengrass's own ROLLBACK acts per device on failure only; this replaces the group's deployment.
    Without ``to_component_version`` the target is the newest earlier model of this group's history that
    was not itself rolled back or rejected.

    Safe to repeat: when the group's latest deployment is already a rollback, the same command returns
    that rollback (``outcome="already-rolled-back"``) instead of rolling back one more model. To roll
    back further, name the model to move away from (``from_model_version``, the group's current model)
    or the version to restore (``to_component_version``). ``from_model_version`` also makes the command
    exact: it refuses if the group runs another model and was not rolled back away from that one.
    """
    with lifecycle_lock(registry, owner=actor, clock=clock, sleep=sleep, policy=lock):
        return _rollback(
            lifecycle=lifecycle,
            target=target,
            registry=registry,
            deployments=deployments,
            clock=clock,
            to_component_version=to_component_version,
            from_model_version=from_model_version,
            reason=reason,
            actor=actor,
        )


def _rollback(
    *,
    lifecycle: LifecycleConfig,
    target: ThingGroupArn,
    registry: Registry,
    deployments: Deployments,
    clock: Clock,
    to_component_version: str | None,
    from_model_version: str | None,
    reason: str,
    actor: str,
) -> RollbackResult:
    history = registry.deployments_for_target(target.arn)
    if not history:
        raise RollbackRefusedError(f"the registry has no deployment to {target.name}")
    current = history[0]
    done = _rolled_back_from(history)
    if from_model_version is not None and from_model_version != current.model_version:
        if done == from_model_version:
            return _already_rolled_back(target, current, done)
        raise RollbackRefusedError(
            f"{target.name} runs model {current.model_version}, not {from_model_version}, and its latest "
            f"deployment is no rollback away from {from_model_version}: nothing rolled back"
        )
    if (
        from_model_version is None
        and done is not None
        and (to_component_version is None or to_component_version == current.component_version)
    ):
        return _already_rolled_back(target, current, done)
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
    expected: dict[str, ModelStatus] = {}
    rolled_back = registry.get_model(current.model_version)
    if rolled_back is not None:
        expected[current.model_version] = rolled_back.status
    if target.arn == lifecycle.fleet.arn:
        changes[chosen.model_version] = ModelStatus.FLEET
        expected[chosen.model_version] = chosen.status
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
            rolled_back_from=current.model_version,
        ),
        status_changes=changes,
        expected_statuses=expected,
    )
    return RollbackResult(
        target_arn=target.arn,
        from_model_version=current.model_version,
        to_model_version=chosen.model_version,
        to_component_version=chosen.component_version,
        deployment_id=deployment_id,
    )


def _rolled_back_from(history: Sequence[DeploymentRecord]) -> str | None:
    """The model the group's latest deployment rolled back away from, if that deployment is a rollback."""
    latest = history[0]
    if latest.stage is not Stage.ROLLBACK:
        return None
    if latest.rolled_back_from is not None:
        return latest.rolled_back_from
    # Recorded before rollbacks named their origin: the model the group ran just before.
    return history[1].model_version if len(history) > 1 else None


def _already_rolled_back(target: ThingGroupArn, current: DeploymentRecord, done: str) -> RollbackResult:
    return RollbackResult(
        target_arn=target.arn,
        from_model_version=done,
        to_model_version=current.model_version,
        to_component_version=current.component_version,
        deployment_id=current.deployment_id,
        outcome="already-rolled-back",
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


class Attention(StrEnum):
    """Why a scheduled check needs a person: a state that no number of further runs resolves."""

    # Failed, and AUTO_ROLLBACK is off: reported `waiting` on every run until someone acts.
    CANARY_FAILED = "canary-failed"
    # The canary's deployment is a rollback and failed too; it is never rolled back again automatically.
    ROLLBACK_FAILED = "rollback-failed"
    # Canary devices also in the fleet group: every run is refused until they leave it.
    GROUP_OVERLAP = "group-overlap"
    # The canary's model can never be promoted (rolled back, superseded), or its deployment lacks the
    # inference component: waiting changes neither, only a new publish or a person does.
    NOT_PROMOTABLE = "not-promotable"
    # The canary failed and its automatic rollback found nothing to restore (e.g. the first model).
    ROLLBACK_REFUSED = "rollback-refused"
    # Any other refusal, e.g. the registry lacks the canary's model: a registry or configuration fault.
    REFUSED = "refused"
    # Canary devices whose heartbeats carry no anomaly counter (an inference component older than the
    # heartbeat's `anomalous_windows`): the rate check cannot run, so the canary waits until a person
    # updates the component; the rate is judged once enough windows are counted after the update.
    RATE_UNJUDGED = "rate-unjudged"


def _checked(result: Mapping[str, object], attention: Attention | None = None) -> dict[str, object]:
    """The result classified: ``needs_attention``, plus ``attention`` (why) when it does."""
    if attention is None:
        return {**result, "needs_attention": False}
    return {**result, "needs_attention": True, "attention": str(attention)}


def _rollback_attention(health: CanaryHealth) -> Attention | None:
    # A rollback still installing is the normal way back, even while devices still report the component
    # the failed model broke; one that failed on the devices that run it stays failed, and the check never
    # rolls a rollback back (see ``check_canary``).
    return Attention.ROLLBACK_FAILED if health.failed_when_deployed else None


def check_canary(
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    deployments: Deployments,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
) -> Mapping[str, object]:
    """What a scheduled run does: promote a healthy canary, wait on a pending one, and roll back a failed
    one when ``auto_rollback`` is on.

    Never rolls back automatically a canary whose deployment is itself a rollback: if the restored model
    fails too, the cause is likely not the model (a device, a sensor, another component), and rolling
    back again would walk the canary back one model per run. Busy (another command holds the lifecycle
    lock), overlapping groups and other refusals are reported, not raised; the next run looks again.

    Every result carries ``needs_attention``: true, with ``attention`` (an ``Attention`` value), when
    the state is one the schedule cannot resolve by itself, so without a person the same result returns
    on every run. A pending canary (installing, baking) and ``busy`` are normal and resolve on their own.
    """
    try:
        with lifecycle_lock(
            registry, owner="scheduled-check", clock=clock, sleep=sleep, policy=SCHEDULED_LOCK
        ):
            return _check_canary(
                lifecycle=lifecycle,
                registry=registry,
                deployments=deployments,
                fleet=fleet,
                heartbeats=heartbeats,
                clock=clock,
            )
    except LockHeldError as busy:
        # The holder's command ends, or its lock expires, within LOCK_TTL_SECONDS.
        return _checked({"action": "busy", "reason": str(busy)})
    except RefusedError as refused:
        # Overlapping groups, a failed canary with nothing to roll back to, a model the registry lacks:
        # each is refused the same way on every run until someone changes it.
        if isinstance(refused, GroupOverlapError):
            attention = Attention.GROUP_OVERLAP
        elif isinstance(refused, RollbackRefusedError):
            attention = Attention.ROLLBACK_REFUSED
        else:
            attention = Attention.REFUSED
        return _checked(
            {"action": "refused", "reason": str(refused), "reasons": list(refused.reasons)}, attention
        )


def _check_canary(
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    deployments: Deployments,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    clock: Clock,
) -> dict[str, object]:
    try:
        result = _promote(
            lifecycle=lifecycle,
            registry=registry,
            deployments=deployments,
            fleet=fleet,
            heartbeats=heartbeats,
            clock=clock,
            expected_model_version=None,
            dry_run=False,
            actor="scheduled-promote",
        )
    except GroupOverlapError:
        raise
    except PromotionRefusedError as refused:
        return _after_refusal(
            refused,
            lifecycle=lifecycle,
            registry=registry,
            deployments=deployments,
            fleet=fleet,
            heartbeats=heartbeats,
            clock=clock,
        )
    outcome = {"action": result.outcome, **result.to_dict()}
    if result.outcome == "already-promoted":
        # The usual end of an automatic rollback: the canary back on the fleet's model, which counts as
        # promoted without a health check. If that rollback fails too, nothing would ever say so.
        current = current_deployment(registry, lifecycle.canary.arn)
        if current is not None and current.stage is Stage.ROLLBACK:
            health = assess_canary(
                lifecycle=lifecycle, registry=registry, fleet=fleet, heartbeats=heartbeats, deployment=current
            )
            return _checked(outcome, _rollback_attention(health))
    return _checked(outcome)


def _after_refusal(
    refused: PromotionRefusedError,
    *,
    lifecycle: LifecycleConfig,
    registry: Registry,
    deployments: Deployments,
    fleet: Fleet,
    heartbeats: Heartbeats | None,
    clock: Clock,
) -> dict[str, object]:
    """A canary that was not promoted: wait, roll it back, or say that a person must act."""
    current = current_deployment(registry, lifecycle.canary.arn)
    if current is None:
        return _checked({"action": "nothing", "reason": str(refused)})
    health = assess_canary(
        lifecycle=lifecycle, registry=registry, fleet=fleet, heartbeats=heartbeats, deployment=current
    )
    if current.stage is Stage.ROLLBACK:
        note = (
            f"the canary's deployment {current.deployment_id} is itself a rollback; it is not rolled "
            "back again automatically"
        )
        # A rollback's restored model is often not promotable (an older, superseded one): the canary
        # rests there until the next publish, which is no fault. Only its failure is.
        return _checked(
            {"action": "waiting", "reason": str(refused), "reasons": [*refused.reasons, note]},
            _rollback_attention(health),
        )
    if health.state is HealthState.FAILED and lifecycle.auto_rollback:
        rolled = _rollback(
            lifecycle=lifecycle,
            target=lifecycle.canary,
            registry=registry,
            deployments=deployments,
            clock=clock,
            to_component_version=None,
            from_model_version=current.model_version,
            reason="canary failed: " + "; ".join(health.reasons),
            actor="scheduled-rollback",
        )
        return _checked({"action": "rolled-back", "reasons": list(health.reasons), **rolled.to_dict()})
    waiting = {"action": "waiting", "reason": str(refused), "reasons": list(refused.reasons)}
    return _checked(waiting, _waiting_attention(refused, health))


def _waiting_attention(refused: PromotionRefusedError, health: CanaryHealth) -> Attention | None:
    """Why a canary that is neither promoted nor rolled back needs a person, if it does."""
    if health.failed_when_deployed:
        # Not a failure still left from the deployment before, which the devices are replacing.
        return Attention.CANARY_FAILED
    if isinstance(refused, NotPromotableError):
        return Attention.NOT_PROMOTABLE
    if health.rate_unjudged:
        return Attention.RATE_UNJUDGED
    return None
