"""The scheduled check's ``needs_attention``: states no number of further runs resolves are flagged,
with why; a pending canary, ``busy`` and the schedule's own promotions and rollbacks are not. Against moto
and the Greengrass v2 fake, as test_lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from lambdas.lifecycle.core import Heartbeats, check_canary, rollback
from lambdas.lifecycle.health import HeartbeatSample
from lambdas.lifecycle.registry import LOCK_TTL_SECONDS, MODEL_SK, PARTITION_KEY, SORT_KEY, model_pk
from tests.lambdas.lifecycle.helpers import (
    CANARY,
    CANARY_THINGS,
    LINEAGE_TABLE,
    Plane,
    control_plane,
)
from tests.lambdas.lifecycle.test_concurrency import hold_lock
from tests.lambdas.lifecycle.test_lifecycle import V1, V2, V3, publish_and_promote


@pytest.fixture
def plane() -> Iterator[Plane]:
    with control_plane() as running:
        yield running


def check(plane: Plane, *, auto_rollback: bool, heartbeats: Heartbeats | None = None) -> dict[str, object]:
    lifecycle = replace(plane.lifecycle, auto_rollback=auto_rollback)
    s = plane.services(lifecycle=lifecycle)
    return dict(
        check_canary(
            lifecycle=lifecycle,
            registry=s.registry,
            deployments=s.deployments,
            fleet=s.fleet,
            heartbeats=heartbeats,
            clock=s.clock,
        )
    )


def assert_normal(checked: dict[str, object]) -> None:
    assert checked["needs_attention"] is False
    assert "attention" not in checked


def latest_canary_deployment(plane: Plane) -> str:
    return str(plane.latest_deployment(CANARY)["deploymentId"])


# --- states a person must resolve --------------------------------------------------------------------


def test_a_failed_canary_without_auto_rollback_needs_attention_on_every_run(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1", inference_state="BROKEN")

    for _ in range(2):
        checked = check(plane, auto_rollback=False)
        assert checked["action"] == "waiting"
        assert (checked["needs_attention"], checked["attention"]) == (True, "canary-failed")
        assert "canary edgeml-canary is failed" in str(checked["reason"])
    assert plane.deployment_count(CANARY) == 2  # nothing was rolled back


def test_a_failed_rollback_on_the_canary_needs_attention_a_pending_one_does_not(plane: Plane):
    for job, version in (("job-1", V1), ("job-2", V2), ("job-3", V3)):
        assert plane.train_and_publish(job, version).outcome == "published"
    plane.report(
        CANARY_THINGS, latest_canary_deployment(plane), model_version="1.0.2", inference_state="BROKEN"
    )
    rolled = check(plane, auto_rollback=True)
    assert (rolled["action"], rolled["to_model_version"]) == ("rolled-back", V2)
    assert_normal(rolled)  # the schedule resolved it

    pending = check(plane, auto_rollback=True)
    assert pending["action"] == "waiting"
    assert_normal(pending)  # the restored model is still installing

    restored = latest_canary_deployment(plane)
    plane.report(CANARY_THINGS, restored, model_version="1.0.1", inference_state="BROKEN")
    failed = check(plane, auto_rollback=True)

    assert failed["action"] == "waiting"
    assert (failed["needs_attention"], failed["attention"]) == (True, "rollback-failed")
    assert f"the canary's deployment {restored} is itself a rollback" in str(failed["reasons"])
    assert latest_canary_deployment(plane) == restored  # still not rolled back again


def test_a_failed_rollback_to_the_fleet_s_model_needs_attention(plane: Plane):
    """The usual automatic rollback restores the fleet's model: it counts as promoted, health unchecked."""
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1", inference_state="BROKEN")
    rolled = check(plane, auto_rollback=True)
    assert (rolled["action"], rolled["to_model_version"]) == ("rolled-back", V1)
    restored = latest_canary_deployment(plane)

    pending = check(plane, auto_rollback=True)
    assert pending["action"] == "already-promoted"
    assert_normal(pending)

    plane.report(CANARY_THINGS, restored, model_version="1.0.0", inference_state="BROKEN")
    failed = check(plane, auto_rollback=True)

    assert failed["action"] == "already-promoted"
    assert (failed["needs_attention"], failed["attention"]) == (True, "rollback-failed")
    assert plane.deployment_count(CANARY) == 3  # V1, V2, the rollback: nothing more


def test_canary_devices_also_in_the_fleet_group_need_attention(plane: Plane):
    plane.iot.add_thing_to_thing_group(thingGroupName="edgeml-fleet", thingName="canary-01")
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id)

    checked = check(plane, auto_rollback=True)

    assert checked["action"] == "refused"
    assert (checked["needs_attention"], checked["attention"]) == (True, "group-overlap")
    assert checked["reasons"] == ["canary-01: in edgeml-canary and in edgeml-fleet"]


def test_a_canary_model_rolled_back_on_the_fleet_needs_attention(plane: Plane):
    """An operator rolls the fleet back from the canary's model: the canary keeps a model that can never
    be promoted again, healthy as it is, until someone rolls it back too or a new model is published."""
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1")
    promoted = check(plane, auto_rollback=False)
    assert promoted["action"] == "promoted"
    assert_normal(promoted)
    s = plane.services()
    back = rollback(
        lifecycle=s.config,
        target=s.config.fleet,
        registry=s.registry,
        deployments=s.deployments,
        clock=s.clock,
        reason="operator: V2 misbehaves on the fleet",
    )
    assert (back.from_model_version, back.to_model_version) == (V2, V1)

    checked = check(plane, auto_rollback=True)

    assert checked["action"] == "waiting"
    assert (checked["needs_attention"], checked["attention"]) == (True, "not-promotable")
    assert checked["reason"] == f"model {V2} is ROLLED_BACK; it is not promoted"
    assert plane.deployment_count(CANARY) == 2  # healthy: auto rollback has nothing to act on


def test_a_failed_first_model_with_nothing_to_roll_back_to_needs_attention(plane: Plane):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id, inference_state="BROKEN")

    checked = check(plane, auto_rollback=True)

    assert checked["action"] == "refused"
    assert (checked["needs_attention"], checked["attention"]) == (True, "rollback-refused")
    assert "no earlier model to roll back to" in str(checked["reason"])


def test_a_canary_model_missing_from_the_registry_needs_attention(plane: Plane):
    assert plane.train_and_publish("job-1", V1).outcome == "published"
    plane.ddb.delete_item(
        TableName=LINEAGE_TABLE, Key={PARTITION_KEY: {"S": model_pk(V1)}, SORT_KEY: {"S": MODEL_SK}}
    )

    checked = check(plane, auto_rollback=True)

    assert checked["action"] == "refused"
    assert (checked["needs_attention"], checked["attention"]) == (True, "refused")
    assert checked["reason"] == f"the canary runs model {V1}, which the registry lacks"


# --- normal states -----------------------------------------------------------------------------------


def test_nothing_pending_promoted_and_already_promoted_need_no_attention(plane: Plane):
    nothing = check(plane, auto_rollback=False)
    assert nothing["action"] == "nothing"
    assert_normal(nothing)

    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    pending = check(plane, auto_rollback=False)
    assert pending["action"] == "waiting"
    assert "canary edgeml-canary is pending" in str(pending["reason"])
    assert_normal(pending)

    plane.report(CANARY_THINGS, outcome.deployment_id)
    promoted = check(plane, auto_rollback=False)
    assert promoted["action"] == "promoted"
    assert_normal(promoted)

    steady = check(plane, auto_rollback=False)
    assert steady["action"] == "already-promoted"
    assert_normal(steady)


def test_busy_needs_no_attention(plane: Plane):
    plane.train_and_publish("job-1", V1)
    hold_lock(plane, "cli-promote/elsewhere", expires_in=LOCK_TTL_SECONDS)

    checked = check(plane, auto_rollback=True)

    assert checked["action"] == "busy"
    assert_normal(checked)


class CounterlessHeartbeats:
    """Heartbeats of an inference component too old to send ``anomalous_windows``."""

    def recent(self, thing_name: str) -> list[HeartbeatSample]:
        return [
            HeartbeatSample(f"2026-11-24T20:{i:02d}:00.000000Z", V1 if i < 10 else V2, 1000.0 * (i + 1), None)
            for i in range(30)
        ]


def test_a_canary_whose_heartbeats_cannot_be_judged_needs_attention(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1")

    for _ in range(2):  # the same every run: waiting never fixes it
        checked = check(plane, auto_rollback=True, heartbeats=CounterlessHeartbeats())
        assert checked["action"] == "waiting"
        assert (checked["needs_attention"], checked["attention"]) == (True, "rate-unjudged")
        assert "carry no 'anomalous_windows' counter" in str(checked["reasons"])
    assert plane.deployment_count(CANARY) == 2  # neither promoted nor rolled back
