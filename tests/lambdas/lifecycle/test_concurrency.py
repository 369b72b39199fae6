"""Concurrent and repeated commands: the lifecycle lock, status changes conditional on what was read, the
publish claim, and a repeated rollback. Against moto and the Greengrass v2 fake, as test_lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from lambdas.lifecycle.core import (
    LockPolicy,
    check_canary,
    promote,
    publish_gated,
    rollback,
)
from lambdas.lifecycle.errors import (
    ConcurrentChangeError,
    LockHeldError,
    RegistryError,
    RetryableError,
    RollbackRefusedError,
)
from lambdas.lifecycle.registry import (
    LOCK_TTL_SECONDS,
    DeploymentRecord,
    LockRecord,
    ModelStatus,
    Stage,
    utc_text,
)
from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.core import Deployment, DeploymentRequest, WaitPolicy
from lambdas.publisher.errors import GreengrassError
from lambdas.publisher.events import parse_event
from tests.lambdas.lifecycle.helpers import (
    BUCKET,
    CANARY,
    CANARY_THINGS,
    FLEET,
    Plane,
    control_plane,
    training_event,
    version_key,
)
from tests.lambdas.lifecycle.test_lifecycle import V1, V2, V3, publish_and_promote
from tests.lambdas.publisher.test_events import s3_notification


@pytest.fixture
def plane() -> Iterator[Plane]:
    with control_plane() as running:
        yield running


def no_sleep(_seconds: float) -> None:
    pass


def rollback_canary(plane: Plane, **kwargs: Any) -> Any:
    s = plane.services()
    return rollback(
        lifecycle=s.config,
        target=s.config.canary,
        registry=s.registry,
        deployments=s.deployments,
        clock=s.clock,
        sleep=no_sleep,
        **kwargs,
    )


def hold_lock(plane: Plane, owner: str, *, expires_in: int) -> None:
    now = int(plane.clock.now.timestamp())
    holder = LockRecord(owner=owner, acquired_at=utc_text(plane.clock.now), expires_at=now + expires_in)
    assert plane.registry.acquire_lock(holder, now=now) is None


# --- the lifecycle lock ------------------------------------------------------------------------------


class RollbackDuringPromote:
    """The fleet deployment's source is read mid-promote: an operator's CLI rollback lands right then."""

    def __init__(self, plane: Plane) -> None:
        self.inner = GreengrassDeployments(plane.gg)
        self.plane = plane
        self.refused: LockHeldError | None = None

    def latest_for_target(self, target_arn: str) -> Deployment | None:
        return self.inner.latest_for_target(target_arn)

    def create(self, request: DeploymentRequest) -> str:
        return self.inner.create(request)

    def get(self, deployment_id: str) -> Deployment:
        if self.refused is None:
            with pytest.raises(LockHeldError) as caught:
                rollback_canary(self.plane, reason="operator: V2 scores wrong", lock=LockPolicy(5.0, 1.0))
            self.refused = caught.value
        return self.inner.get(deployment_id)


def test_a_rollback_cannot_land_inside_a_promote(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1")
    s = plane.services()
    racing = RollbackDuringPromote(plane)

    result = promote(
        lifecycle=s.config,
        registry=s.registry,
        deployments=racing,
        fleet=s.fleet,
        heartbeats=None,
        clock=s.clock,
        actor="scheduled-promote",
    )

    assert racing.refused is not None
    assert "scheduled-promote/" in str(racing.refused)
    assert "has held the lifecycle lock" in str(racing.refused)
    assert result.outcome == "promoted"
    # The refused rollback wrote nothing: the canary keeps V2, the fleet runs V2, and the registry agrees.
    assert plane.deployment_count(CANARY) == 2
    assert [d.stage for d in plane.registry.deployments_for_target(CANARY)] == [Stage.CANARY, Stage.CANARY]
    model = plane.registry.get_model(V2)
    assert model is not None
    assert model.status is ModelStatus.FLEET
    # Released afterwards: the next command takes the lock at once.
    rolled = rollback_canary(plane, reason="now")
    assert (rolled.from_model_version, rolled.to_model_version) == (V2, V1)


def test_a_held_lock_makes_commands_wait_then_refuse_and_the_scheduled_check_report_busy(plane: Plane):
    plane.train_and_publish("job-1", V1)
    plane.train_and_publish("job-2", V2)
    hold_lock(plane, "cli-promote/elsewhere", expires_in=LOCK_TTL_SECONDS)
    sleeps: list[float] = []
    s = plane.services()

    with pytest.raises(LockHeldError, match=r"cli-promote/elsewhere has held the lifecycle lock since"):
        rollback(
            lifecycle=s.config,
            target=s.config.canary,
            registry=s.registry,
            deployments=s.deployments,
            clock=s.clock,
            sleep=sleeps.append,
            lock=LockPolicy(wait_seconds=6.0, poll_seconds=2.0),
        )
    assert len(sleeps) >= 2  # it waited, polling
    assert set(sleeps) == {2.0}
    assert plane.deployment_count(CANARY) == 2
    checked = check_canary(
        lifecycle=s.config,
        registry=s.registry,
        deployments=s.deployments,
        fleet=s.fleet,
        heartbeats=None,
        clock=s.clock,
    )
    assert checked["action"] == "busy"
    assert "cli-promote/elsewhere" in str(checked["reason"])

    # A holder killed before its `finally` (SIGKILL, a Lambda timeout) blocks for LOCK_TTL_SECONDS only.
    plane.clock.now += timedelta(seconds=LOCK_TTL_SECONDS + 1)
    result = rollback_canary(plane, lock=LockPolicy())
    assert (result.from_model_version, result.to_model_version) == (V2, V1)


# --- status changes conditional on the status read ---------------------------------------------------


class LocklessRollbackDuringCreate:
    """A writer that bypasses the lock (an older CLI) rolls V2 off while promote creates the fleet's
    deployment."""

    def __init__(self, plane: Plane) -> None:
        self.inner = GreengrassDeployments(plane.gg)
        self.plane = plane

    def latest_for_target(self, target_arn: str) -> Deployment | None:
        return self.inner.latest_for_target(target_arn)

    def get(self, deployment_id: str) -> Deployment:
        return self.inner.get(deployment_id)

    def create(self, request: DeploymentRequest) -> str:
        deployment_id = self.inner.create(request)
        if request.target_arn == FLEET:
            self.plane.registry.record_deployment(
                DeploymentRecord(
                    "d-lockless",
                    CANARY,
                    Stage.ROLLBACK,
                    V1,
                    "com.edgeml.AnomalyModel",
                    "1.0.0",
                    utc_text(self.plane.clock()),
                    "old-cli",
                ),
                status_changes={V2: ModelStatus.ROLLED_BACK},
            )
        return deployment_id


def test_promote_does_not_overwrite_a_status_another_writer_changed(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1")
    s = plane.services()

    with pytest.raises(ConcurrentChangeError, match="another writer changed a model's status"):
        promote(
            lifecycle=s.config,
            registry=s.registry,
            deployments=LocklessRollbackDuringCreate(plane),
            fleet=s.fleet,
            heartbeats=None,
            clock=s.clock,
        )

    statuses = {v: m.status for v in (V1, V2) if (m := plane.registry.get_model(v)) is not None}
    assert statuses == {V1: ModelStatus.FLEET, V2: ModelStatus.ROLLED_BACK}
    (latest,) = plane.registry.deployments_for_target(FLEET, limit=1)
    assert latest.model_version == V1  # the promotion was not recorded over the rollback


# --- the publish claim -------------------------------------------------------------------------------


def publish_direct(plane: Plane, event: dict[str, Any], **kwargs: Any) -> list[Any]:
    return [
        publish_gated(
            request,
            publisher=plane.publisher,
            lifecycle=plane.lifecycle,
            store=kwargs.get("store") or S3ModelStore(plane.s3),
            components=GreengrassComponents(plane.gg),
            deployments=kwargs.get("deployments") or GreengrassDeployments(plane.gg),
            registry=plane.registry,
            clock=plane.clock,
            sleep=no_sleep,
            wait=WaitPolicy(max_tries=3, delay_seconds=0.0),
        )
        for request in parse_event(event, model_bucket=BUCKET)
    ]


class CopyEventOnWrite(S3ModelStore):
    """S3 announces the publisher's own models/ copy the moment it is written, before the publish ends."""

    def __init__(self, plane: Plane) -> None:
        super().__init__(plane.s3)
        self.plane = plane
        self.copy_outcomes: list[Any] = []

    def put_if_absent(self, bucket: str, key: str, data: bytes, **kwargs: Any) -> bool:
        written: bool = super().put_if_absent(bucket, key, data, **kwargs)
        if key == version_key(V1):
            self.copy_outcomes = publish_direct(self.plane, s3_notification(key))
        return written


def test_the_copy_s_event_arriving_mid_publish_is_a_duplicate(plane: Plane):
    uri = plane.put_model(V1)
    store = CopyEventOnWrite(plane)

    (first,) = publish_direct(plane, training_event("job-1", uri), store=store)

    assert first.outcome == "published"
    assert [o.outcome for o in store.copy_outcomes] == ["duplicate"]
    assert len(plane.registry.deployments_for_target(CANARY)) == 1
    assert plane.deployment_count(CANARY) == 1
    model = plane.registry.get_model(V1)
    assert model is not None
    assert (model.status, model.training_job) == (ModelStatus.CANARY, "job-1")


class FailingCreate(GreengrassDeployments):
    def create(self, request: DeploymentRequest) -> str:
        raise GreengrassError("ThrottlingException: Rate exceeded")


def test_a_failed_publish_keeps_its_claim_for_its_retry_not_for_the_copy_s_event(plane: Plane):
    uri = plane.put_model(V1)
    with pytest.raises(GreengrassError, match="Rate exceeded"):
        publish_direct(plane, training_event("job-1", uri), deployments=FailingCreate(plane.gg))
    claimed = plane.registry.get_model(V1)
    assert claimed is not None
    assert claimed.status is ModelStatus.PUBLISHING

    (copy_event,) = publish_direct(plane, s3_notification(version_key(V1)))
    (retry,) = publish_direct(plane, training_event("job-1", uri))

    assert (copy_event.outcome, retry.outcome) == ("duplicate", "published")
    assert plane.deployment_count(CANARY) == 1
    model = plane.registry.get_model(V1)
    assert model is not None
    assert (model.status, model.training_job) == (ModelStatus.CANARY, "job-1")
    assert plane.registry.model_for_job("job-1") == V1


# --- a repeated rollback -----------------------------------------------------------------------------


def test_a_repeated_rollback_returns_the_first_one_instead_of_rolling_back_another_model(plane: Plane):
    for job, version in (("job-1", V1), ("job-2", V2), ("job-3", V3)):
        assert plane.train_and_publish(job, version).outcome == "published"

    first = rollback_canary(plane, reason="V3 bad")
    again = rollback_canary(plane, reason="V3 bad")  # a retry after a lost response
    assert (first.from_model_version, first.to_model_version) == (V3, V2)
    assert (again.from_model_version, again.to_model_version) == (V3, V2)
    exact = rollback_canary(plane, reason="V3 bad", from_model_version=V3)

    for repeated in (again, exact):
        assert (repeated.from_model_version, repeated.to_model_version) == (V3, V2)
        assert repeated.deployment_id == first.deployment_id
    assert (first.outcome, again.outcome, exact.outcome) == (
        "rolled-back",
        "already-rolled-back",
        "already-rolled-back",
    )
    assert plane.deployment_count(CANARY) == 4
    model = plane.registry.get_model(V2)
    assert model is not None
    assert model.status is ModelStatus.CANARY

    # Further back only when asked for by name, and never from a model the group does not run.
    with pytest.raises(RollbackRefusedError, match=f"runs model {V2}, not {V1}"):
        rollback_canary(plane, from_model_version=V1)
    further = rollback_canary(plane, reason="V2 bad too", from_model_version=V2)
    assert (further.from_model_version, further.to_model_version, further.outcome) == (V2, V1, "rolled-back")
    latest = plane.latest_deployment(CANARY)
    assert latest["deploymentId"] == further.deployment_id


# --- a holder that dies, a release that fails ----------------------------------------------------------


class Killed(BaseException):
    """The Lambda runtime ending the invocation at its timeout: no `finally` runs."""


class DeadProcessRegistry:
    """The registry as seen by a process killed before its `finally`: the release never happens."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def release_lock(self, owner: str) -> None:
        del owner


class KilledAfterCreate(GreengrassDeployments):
    def create(self, request: DeploymentRequest) -> str:
        super().create(request)
        raise Killed("Task timed out after 300.00 seconds")


def test_a_retry_of_a_publish_killed_holding_the_lock_takes_its_lock_back(plane: Plane):
    """Lambda retries an async invocation 1-2 minutes after a timeout, well inside the lock's expiry: the
    retry of the *same* request resumes instead of waiting the lock out into the dead-letter queue."""
    event = training_event("job-1", plane.put_model(V1))
    (request,) = parse_event(event, model_bucket=BUCKET)

    def attempt(deployments: Any, registry: Any) -> Any:
        return publish_gated(
            request,
            publisher=plane.publisher,
            lifecycle=plane.lifecycle,
            store=S3ModelStore(plane.s3),
            components=GreengrassComponents(plane.gg),
            deployments=deployments,
            registry=registry,
            clock=plane.clock,
            sleep=no_sleep,
            wait=WaitPolicy(max_tries=3, delay_seconds=0.0),
            lock=LockPolicy(),  # no waiting: a held lock would be LockHeldError at once
        )

    with pytest.raises(Killed):
        attempt(KilledAfterCreate(plane.gg), DeadProcessRegistry(plane.registry))
    # Lambda's first retry comes about a minute after the timeout: the dead attempt's lock is still live.
    plane.clock.now += timedelta(seconds=LOCK_TTL_SECONDS - 1)

    outcome = attempt(GreengrassDeployments(plane.gg), plane.registry)

    assert outcome.outcome == "published"
    model = plane.registry.get_model(V1)
    assert model is not None
    assert model.status is ModelStatus.CANARY


class FailingRelease:
    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner, self.error, self.calls = inner, error, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def release_lock(self, owner: str) -> None:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        RetryableError("releasing the lifecycle lock: ProvisionedThroughputExceededException: x"),
        RegistryError("releasing the lifecycle lock: InternalServerError: x"),
    ],
)
def test_a_failed_release_does_not_turn_a_done_promote_into_a_failure(plane: Plane, error: Exception):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1")
    s = plane.services()
    registry = FailingRelease(s.registry, error)

    result = promote(
        lifecycle=s.config,
        registry=registry,
        deployments=s.deployments,
        fleet=s.fleet,
        heartbeats=None,
        clock=s.clock,
        sleep=no_sleep,
    )

    assert result.model_version == V2
    model = plane.registry.get_model(V2)
    assert model is not None
    assert model.status is ModelStatus.FLEET
    assert registry.calls == (3 if isinstance(error, RetryableError) else 1)
