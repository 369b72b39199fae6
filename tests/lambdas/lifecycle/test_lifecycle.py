"""Publish → canary → promote → rollback against moto (S3, DynamoDB, IoT) and the Greengrass v2 fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from lambdas.lifecycle.core import (
    PromotionResult,
    check_canary,
    device_view,
    group_view,
    model_lineage,
    promote,
    rollback,
)
from lambdas.lifecycle.errors import (
    GroupOverlapError,
    NotFoundError,
    PromotionRefusedError,
    RollbackRefusedError,
)
from lambdas.lifecycle.registry import ModelStatus, Stage
from lambdas.publisher.errors import ModelNotFoundError, ModelValidationError
from standins.greengrass_fake import InstalledComponentReport
from tests.lambdas.lifecycle.helpers import (
    CANARY,
    CANARY_THINGS,
    FLEET,
    FLEET_THINGS,
    INFERENCE_COMPONENT,
    INFERENCE_VERSION,
    MODEL_COMPONENT,
    Plane,
    control_plane,
    training_event,
    version_key,
)

V1 = "20261124T200000Z-00000001"
V2 = "20261125T200000Z-00000002"
V3 = "20261126T200000Z-00000003"


@pytest.fixture
def plane() -> Iterator[Plane]:
    with control_plane() as running:
        yield running


def promote_now(plane: Plane, **kwargs: Any) -> PromotionResult:
    s = plane.services()
    return promote(
        lifecycle=s.config,
        registry=s.registry,
        deployments=s.deployments,
        fleet=s.fleet,
        heartbeats=s.heartbeats,
        clock=s.clock,
        **kwargs,
    )


def publish_and_promote(plane: Plane, job: str, version: str, component_version: str) -> str:
    outcome = plane.train_and_publish(job, version)
    assert outcome.outcome == "published"
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id, model_version=component_version)
    result = promote_now(plane)
    assert result.outcome == "promoted"
    return str(result.deployment_id)


def test_publish_deploys_to_the_canary_with_rollback_abort_and_rate_and_records_lineage(plane: Plane):
    outcome = plane.train_and_publish("job-1", V1)

    assert outcome.outcome == "published"
    deployment = plane.latest_deployment(CANARY)
    assert deployment["deploymentId"] == outcome.deployment_id
    assert deployment["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    assert deployment["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"
    job = deployment["iotJobConfiguration"]
    (criterion,) = job["abortConfig"]["criteriaList"]
    assert criterion == {
        "failureType": "ALL",
        "action": "CANCEL",
        "thresholdPercentage": 1.0,
        "minNumberOfExecutedThings": 1,
    }
    assert job["jobExecutionsRolloutConfig"]["exponentialRate"]["baseRatePerMinute"] == 5
    assert job["jobExecutionsRolloutConfig"]["maximumPerMinute"] == 20
    assert plane.deployment_count(FLEET) == 0  # nothing reaches the fleet before promotion

    model, deployments = model_lineage(plane.registry, V1)
    assert (model.status, model.training_job, model.component_version) == (
        ModelStatus.CANARY,
        "job-1",
        "1.0.0",
    )
    assert model.model_uri == f"s3://edgeml-models/{version_key(V1)}"
    # Devices download the released copy under components/ (the only prefix their role reads).
    assert outcome.publish is not None
    artifact_uri = f"s3://edgeml-models/components/{MODEL_COMPONENT}/1.0.0/model.onnx"
    assert outcome.publish.artifact_uri == artifact_uri
    recipe = json.loads(
        plane.gg.get_component(arn=outcome.publish.component_arn, recipeOutputFormat="JSON")["recipe"]
    )
    assert [a["URI"] for a in recipe["Manifests"][0]["Artifacts"]] == [artifact_uri]
    assert model.training_metrics["n_windows"] == 2000
    assert [(d.deployment_id, d.stage, d.target_arn) for d in deployments] == [
        (outcome.deployment_id, Stage.CANARY, CANARY)
    ]
    assert plane.registry.model_for_job("job-1") == V1
    assert plane.registry.model_for_component(MODEL_COMPONENT, "1.0.0") == V1


def test_gate_floor_failure_is_recorded_and_changes_nothing_in_greengrass(plane: Plane):
    outcome = plane.train_and_publish("job-small", V1, n_windows=40)

    assert outcome.outcome == "rejected"
    assert outcome.model.status is ModelStatus.REJECTED
    assert "n_windows = 40 is below the floor 100" in outcome.model.reason
    recorded = plane.registry.get_model(V1)
    assert recorded is not None
    assert (recorded.status, recorded.reason) == (ModelStatus.REJECTED, outcome.model.reason)
    assert plane.registry.model_for_job("job-small") == V1
    names = [c["componentName"] for c in plane.gg.list_components()["components"]]
    assert names == [INFERENCE_COMPONENT]
    assert plane.deployment_count(CANARY) == 0
    # Nothing devices could read was written for the rejected model.
    assert plane.s3.list_objects_v2(Bucket="edgeml-models", Prefix="components/")["KeyCount"] == 0


def test_gate_regression_against_production_is_rejected(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    # Production flags 0.2 % of its training windows; the candidate flags 5 %: worse by more than 0.01.
    outcome = plane.train_and_publish("job-2", V2, fraction=0.05)

    assert outcome.outcome == "rejected"
    assert (
        f"regression: calibration.train_fraction_over_threshold = 0.05 vs 0.002 for production model {V1}"
        in (outcome.model.reason)
    )
    assert plane.latest_deployment(CANARY)["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    assert plane.deployment_count(CANARY) == 1


def test_gate_passes_a_candidate_within_tolerance(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    outcome = plane.train_and_publish("job-2", V2, fraction=0.008)
    assert outcome.outcome == "published"
    assert outcome.gate is not None
    assert any(note.startswith("no regression") for note in outcome.gate.notes)


def test_duplicate_training_event_and_the_copy_s_object_event_are_no_ops(plane: Plane):
    uri = plane.put_model(V1)
    (first,) = plane.publish(training_event("job-1", uri))
    (again,) = plane.publish(training_event("job-1", uri))
    # Writing the version-addressed copy fires an ObjectCreated event for it, too.
    from tests.lambdas.publisher.test_events import s3_notification

    (copy_event,) = plane.publish(s3_notification(version_key(V1)))

    assert first.outcome == "published"
    assert (again.outcome, copy_event.outcome) == ("duplicate", "duplicate")
    assert again.model.model_version == copy_event.model.model_version == V1
    assert plane.deployment_count(CANARY) == 1
    assert len(plane.registry.deployments_for_model(V1)) == 1


def test_duplicate_event_for_an_old_model_does_not_move_the_canary_back(plane: Plane):
    uri = plane.put_model(V1)
    plane.publish(training_event("job-1", uri))
    plane.train_and_publish("job-2", V2)
    (late,) = plane.publish(training_event("job-1", uri))
    assert late.outcome == "duplicate"
    assert plane.latest_deployment(CANARY)["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.1"


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (None, ModelNotFoundError, "does not exist"),
        (b"\x08\x01garbage", ModelValidationError, "not a loadable ONNX model"),
    ],
    ids=["missing", "corrupt"],
)
def test_missing_or_corrupt_model_records_nothing(
    plane: Plane, data: bytes | None, error: type[Exception], message: str
):
    uri = f"s3://edgeml-models/training/{V1}/output/model.onnx"
    if data is not None:
        plane.put_model(V1, data)
    with pytest.raises(error, match=message):
        plane.publish(training_event("job-1", uri))
    assert plane.registry.model_for_job("job-1") is None
    assert plane.deployment_count(CANARY) == 0


def test_promote_refused_while_a_canary_device_has_not_reported(plane: Plane):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS[:1], outcome.deployment_id)

    with pytest.raises(PromotionRefusedError, match="canary edgeml-canary is pending") as caught:
        promote_now(plane)
    assert caught.value.reasons == (
        f"canary-02: deployment {outcome.deployment_id} is QUEUED",
        f"canary-02: {MODEL_COMPONENT} is not installed",
        f"canary-02: {INFERENCE_COMPONENT} is not installed",
    )
    assert plane.deployment_count(FLEET) == 0


def test_promote_refused_when_a_canary_device_reports_failed(plane: Plane):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS[:1], outcome.deployment_id)
    plane.report(
        CANARY_THINGS[1:], outcome.deployment_id, status="FAILED", reason="ARTIFACT_CHECKSUM_MISMATCH"
    )

    with pytest.raises(PromotionRefusedError, match="is failed") as caught:
        promote_now(plane)
    assert caught.value.reasons == (
        f"canary-02: deployment {outcome.deployment_id} is FAILED: ARTIFACT_CHECKSUM_MISMATCH",
    )
    assert plane.deployment_count(FLEET) == 0
    model = plane.registry.get_model(V1)
    assert model is not None
    assert model.status is ModelStatus.CANARY


@pytest.mark.parametrize("state", ["ERRORED", "BROKEN"])
def test_promote_refused_when_the_inference_component_is_broken(plane: Plane, state: str):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id, inference_state=state)

    with pytest.raises(PromotionRefusedError) as caught:
        promote_now(plane)
    assert f"canary-01: {INFERENCE_COMPONENT} {INFERENCE_VERSION} is {state}" in caught.value.reasons
    assert plane.deployment_count(FLEET) == 0


def test_promote_deploys_the_canary_model_to_the_fleet_merging_its_deployment(plane: Plane):
    plane.gg.create_deployment(
        targetArn=FLEET,
        deploymentName="fleet-baseline",
        components={
            "aws.greengrass.Nucleus": {"componentVersion": "2.14.0"},
            INFERENCE_COMPONENT: {
                "componentVersion": INFERENCE_VERSION,
                "configurationUpdate": {"merge": '{"stream":"pump-1"}'},
            },
        },
    )
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id)

    result = promote_now(plane)

    fleet = plane.latest_deployment(FLEET)
    assert result.deployment_id == fleet["deploymentId"]
    assert fleet["deploymentName"] == "fleet-baseline"
    assert fleet["components"]["aws.greengrass.Nucleus"] == {"componentVersion": "2.14.0"}
    assert fleet["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    merge = json.loads(fleet["components"][INFERENCE_COMPONENT]["configurationUpdate"]["merge"])
    assert merge["stream"] == "pump-1"
    assert merge["model"] == {
        "component": MODEL_COMPONENT,
        "version": "1.0.0",
        "sha256": outcome.model.sha256,
        "modelVersion": V1,
    }
    assert fleet["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"
    (criterion,) = fleet["iotJobConfiguration"]["abortConfig"]["criteriaList"]
    assert (criterion["thresholdPercentage"], criterion["minNumberOfExecutedThings"]) == (5.0, 10)
    model, deployments = model_lineage(plane.registry, V1)
    assert model.status is ModelStatus.FLEET
    assert [d.stage for d in deployments] == [Stage.FLEET, Stage.CANARY]
    # Promoting again is a no-op.
    again = promote_now(plane)
    assert again.outcome == "already-promoted"
    assert plane.deployment_count(FLEET) == 2


def test_promote_dry_run_checks_health_and_deploys_nothing(plane: Plane):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id)
    result = promote_now(plane, dry_run=True)
    assert result.outcome == "dry-run"
    assert plane.deployment_count(FLEET) == 0


def test_promote_refuses_a_model_the_canary_does_not_run(plane: Plane):
    plane.train_and_publish("job-1", V1)
    with pytest.raises(PromotionRefusedError, match=f"runs model {V1}, not {V2}"):
        promote_now(plane, expected_model_version=V2)


def test_promote_with_nothing_on_the_canary_is_refused(plane: Plane):
    with pytest.raises(PromotionRefusedError, match="nothing has been deployed to the canary group"):
        promote_now(plane)


def test_fleet_rollback_redeploys_the_previous_model_to_every_fleet_device(plane: Plane):
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = publish_and_promote(plane, "job-2", V2, "1.0.1")
    # Fleet devices already succeeded with the new model; AWS's rollback would leave them on it.
    plane.report(FLEET_THINGS, second, model_version="1.0.1")
    s = plane.services()

    result = rollback(
        lifecycle=s.config,
        target=s.config.fleet,
        registry=s.registry,
        deployments=s.deployments,
        clock=s.clock,
        reason="anomaly storm on fleet-02",
    )

    assert (result.from_model_version, result.to_model_version, result.to_component_version) == (
        V2,
        V1,
        "1.0.0",
    )
    fleet = plane.latest_deployment(FLEET)
    assert fleet["deploymentId"] == result.deployment_id
    assert fleet["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    merge = json.loads(fleet["components"][INFERENCE_COMPONENT]["configurationUpdate"]["merge"])
    assert merge["model"]["modelVersion"] == V1
    # Every fleet device, including those that succeeded, now has the rollback as its fleet deployment.
    for thing in FLEET_THINGS:
        effective = plane.gg.list_effective_deployments(coreDeviceThingName=thing)["effectiveDeployments"]
        assert {e["deploymentId"] for e in effective if e["targetArn"] == FLEET} == {result.deployment_id}
    statuses = {v: m.status for v in (V1, V2) if (m := plane.registry.get_model(v)) is not None}
    assert statuses == {V1: ModelStatus.FLEET, V2: ModelStatus.ROLLED_BACK}
    (latest,) = plane.registry.deployments_for_target(FLEET, limit=1)
    assert (latest.stage, latest.reason) == (Stage.ROLLBACK, "anomaly storm on fleet-02")


def test_rollback_to_an_explicit_version_and_refusals(plane: Plane):
    s = plane.services()
    with pytest.raises(RollbackRefusedError, match="no deployment to edgeml-fleet"):
        rollback(
            lifecycle=s.config,
            target=s.config.fleet,
            registry=s.registry,
            deployments=s.deployments,
            clock=s.clock,
        )
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    with pytest.raises(RollbackRefusedError, match="no earlier model"):
        rollback(
            lifecycle=s.config,
            target=s.config.fleet,
            registry=s.registry,
            deployments=s.deployments,
            clock=s.clock,
        )
    with pytest.raises(NotFoundError, match=r"no com\.edgeml\.AnomalyModel version 9\.9\.9"):
        rollback(
            lifecycle=s.config,
            target=s.config.fleet,
            registry=s.registry,
            deployments=s.deployments,
            clock=s.clock,
            to_component_version="9.9.9",
        )
    plane.train_and_publish("job-2", V2)
    result = rollback(
        lifecycle=s.config,
        target=s.config.canary,
        registry=s.registry,
        deployments=s.deployments,
        clock=s.clock,
        to_component_version="1.0.0",
    )
    assert (result.from_model_version, result.to_model_version) == (V2, V1)
    assert plane.latest_deployment(CANARY)["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"


def test_what_runs_where_joins_devices_with_the_registry(plane: Plane):
    deployment_id = publish_and_promote(plane, "job-1", V1, "1.0.0")
    plane.report(FLEET_THINGS[:2], deployment_id)
    s = plane.services()

    view = group_view(s.config.fleet, lifecycle=s.config, registry=s.registry, fleet=s.fleet)

    assert view.deployment is not None
    assert view.deployment.deployment_id == deployment_id
    assert view.model is not None
    assert (view.model.model_version, view.model.training_job) == (V1, "job-1")
    by_thing = {d.thing_name: d for d in view.devices}
    assert set(by_thing) == set(FLEET_THINGS)
    assert (by_thing["fleet-01"].model_version, by_thing["fleet-01"].training_job) == (V1, "job-1")
    assert by_thing["fleet-01"].inference_component_state == "RUNNING"
    assert by_thing["fleet-03"].model_version is None  # has not installed anything yet
    (effective,) = by_thing["fleet-03"].deployments
    assert (effective.deployment_id, effective.status) == (deployment_id, "QUEUED")

    device = device_view("canary-01", lifecycle=s.config, registry=s.registry, fleet=s.fleet)
    assert (device.model_component_version, device.model_version, device.training_job) == (
        "1.0.0",
        V1,
        "job-1",
    )
    assert json.dumps(view.to_dict())


def test_scheduled_check_promotes_waits_and_rolls_back(plane: Plane):
    auto = replace(plane.lifecycle, auto_rollback=True)
    s = plane.services(lifecycle=auto)

    def check() -> dict[str, object]:
        return dict(
            check_canary(
                lifecycle=auto,
                registry=s.registry,
                deployments=s.deployments,
                fleet=s.fleet,
                heartbeats=None,
                clock=s.clock,
            )
        )

    assert check()["action"] == "nothing"
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    second = plane.train_and_publish("job-2", V2)
    assert second.deployment_id is not None
    assert check()["action"] == "waiting"
    plane.report(CANARY_THINGS, second.deployment_id, model_version="1.0.1", inference_state="BROKEN")
    rolled = check()
    assert (rolled["action"], rolled["to_model_version"]) == ("rolled-back", V1)
    assert plane.latest_deployment(CANARY)["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    assert plane.deployment_count(FLEET) == 1


def test_promote_refused_when_the_canary_anomaly_rate_jumps_over_the_previous_model(plane: Plane):
    from lambdas.ingest.adapters import DynamoEventStore
    from lambdas.ingest.events import parse_message
    from lambdas.ingest.table import EVENTS_TABLE_SCHEMA
    from tests.lambdas.lifecycle.helpers import EVENTS_TABLE

    plane.ddb.create_table(**EVENTS_TABLE_SCHEMA.create_table_kwargs(EVENTS_TABLE))
    store = DynamoEventStore(EVENTS_TABLE, plane.ddb)
    publish_and_promote(plane, "job-1", V1, "1.0.0")
    outcome = plane.train_and_publish("job-2", V2)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id, model_version="1.0.1")
    for thing in CANARY_THINGS:
        # 0.5 % under the fleet's model, then 4 % once the canary runs the new one (bound: 3 x 0.5 % + 0.5 %).
        for minute, model, windows, anomalies in ((0, V1, 0, 0), (1, V1, 1000, 5), (2, V2, 2000, 45)):
            message = {
                "schema": "edgeml.health/1",
                "thing_name": thing,
                "timestamp": f"2026-11-25T21:{minute:02d}:00Z",
                "windows_scored": windows,
                "anomalous_windows": anomalies,
                "model_version": model,
                "rejects": {},
                "thing_from_topic": thing,
            }
            store.put_heartbeat(parse_message(message), received_at=0.0, expires_at=1)  # type: ignore[arg-type]
    s = plane.services(heartbeats=True)

    with pytest.raises(PromotionRefusedError, match="is failed") as caught:
        promote(
            lifecycle=s.config,
            registry=s.registry,
            deployments=s.deployments,
            fleet=s.fleet,
            heartbeats=s.heartbeats,
            clock=s.clock,
        )
    assert caught.value.reasons[0] == (
        "canary-01: anomaly rate 0.04 exceeds 0.02 (3 * the previous model's 0.005 + 0.005)"
    )
    assert plane.latest_deployment(FLEET)["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"


def test_promote_refuses_while_canary_devices_are_also_in_the_fleet_group(plane: Plane):
    # On Greengrass the device would get both groups' deployments, pinning two model versions at once.
    plane.iot.add_thing_to_thing_group(thingGroupName="edgeml-fleet", thingName="canary-01")
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id)

    for dry_run in (True, False):
        with pytest.raises(GroupOverlapError, match="in both the canary group edgeml-canary") as caught:
            promote_now(plane, dry_run=dry_run)
        assert caught.value.reasons == ("canary-01: in edgeml-canary and in edgeml-fleet",)
    assert plane.deployment_count(FLEET) == 0
    # Nor does the scheduled check roll back over it: the failure would be the overlap's, not the model's.
    auto = replace(plane.lifecycle, auto_rollback=True)
    s = plane.services(lifecycle=auto)
    plane.report(CANARY_THINGS, outcome.deployment_id, inference_state="BROKEN")
    checked = check_canary(
        lifecycle=auto,
        registry=s.registry,
        deployments=s.deployments,
        fleet=s.fleet,
        heartbeats=None,
        clock=s.clock,
    )
    assert checked["action"] == "refused"
    assert checked["reasons"] == ["canary-01: in edgeml-canary and in edgeml-fleet"]
    assert plane.deployment_count(CANARY) == 1


def scheduled_check(plane: Plane) -> dict[str, object]:
    auto = replace(plane.lifecycle, auto_rollback=True)
    s = plane.services(lifecycle=auto)
    return dict(
        check_canary(
            lifecycle=auto,
            registry=s.registry,
            deployments=s.deployments,
            fleet=s.fleet,
            heartbeats=None,
            clock=s.clock,
        )
    )


def test_a_broken_component_that_is_not_the_model_s_does_not_roll_the_model_back(plane: Plane):
    for job, version in (("job-1", V1), ("job-2", V2)):
        assert plane.train_and_publish(job, version).outcome == "published"
    deployment_id = plane.latest_deployment(CANARY)["deploymentId"]
    for thing in CANARY_THINGS:
        plane.fake.report_device_status(
            thing,
            deployment_id,
            "SUCCEEDED",
            [
                InstalledComponentReport(MODEL_COMPONENT, "1.0.1", "FINISHED"),
                InstalledComponentReport(INFERENCE_COMPONENT, INFERENCE_VERSION, "RUNNING"),
                InstalledComponentReport("vendor.SensorDriver", "1.0.0", "BROKEN"),
            ],
        )

    checked = scheduled_check(plane)

    assert checked["action"] == "promoted"  # not "rolled-back"
    assert checked["model_version"] == V2
    assert plane.deployment_count(CANARY) == 2


def test_the_scheduled_check_never_rolls_back_a_rollback(plane: Plane):
    for job, version in (("job-1", V1), ("job-2", V2), ("job-3", V3)):
        assert plane.train_and_publish(job, version).outcome == "published"
    third = plane.latest_deployment(CANARY)["deploymentId"]
    plane.report(CANARY_THINGS, third, model_version="1.0.2", inference_state="BROKEN")
    first = scheduled_check(plane)
    assert first["action"] == "rolled-back"
    assert (first["from_model_version"], first["to_model_version"]) == (V3, V2)
    # The restored model fails too: the cause is elsewhere (a device, the inference component).
    restored = plane.latest_deployment(CANARY)["deploymentId"]
    plane.report(CANARY_THINGS, restored, model_version="1.0.1", inference_state="BROKEN")

    second = scheduled_check(plane)

    assert second["action"] == "waiting"
    assert f"the canary's deployment {restored} is itself a rollback" in str(second["reasons"])
    assert plane.latest_deployment(CANARY)["deploymentId"] == restored
    statuses = {v: m.status for v in (V1, V2) if (m := plane.registry.get_model(v)) is not None}
    assert statuses == {V1: ModelStatus.CANARY, V2: ModelStatus.CANARY}
