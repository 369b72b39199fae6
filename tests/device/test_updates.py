"""Later deployments on a running device: what restarts, what only hears new configuration, and reports."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from device import ComponentVersionConflictError, DeviceError
from device.lifecycle import ComponentState
from device.runner import DeviceRunner, LocalPolicy

from .helpers import FakeControlPlane, MemoryStore, digest, local_runner, toy_recipe

TOY = "com.example.Toy"
MODEL = "com.example.Model"
# Run interpolates /count but not /greeting: a new greeting must not restart it, a new count must.
RUN = "echo {configuration:/count} >> {work:path}/counts; exec sleep 30"


def _model_recipe(version: str, data: bytes) -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": MODEL,
        "ComponentVersion": version,
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": {},
                "Artifacts": [{"URI": f"s3://bucket/m/{version}/model.onnx", "Digest": digest(data)}],
            }
        ],
    }


def _toy(version: str = "1.0.0", dependency: str = "SOFT") -> dict[str, Any]:
    recipe = toy_recipe(
        run=RUN,
        ComponentVersion=version,
        ComponentDependencies={MODEL: {"VersionRequirement": ">=1.0.0", "DependencyType": dependency}},
    )
    recipe["Manifests"][0]["Artifacts"] = []
    return recipe


def _deployment(
    deployment_id: str, *, toy: str = "1.0.0", model: str = "1.0.0", merge: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "deployment_id": deployment_id,
        "created": float(deployment_id.rsplit("-", 1)[-1]),
        "components": {
            TOY: {"version": toy, "merge": merge or {"greeting": "hi", "model": {"version": model}}},
            MODEL: {"version": model, "merge": None},
        },
    }


def _setup(tmp_path: Path, dependency: str = "SOFT") -> tuple[DeviceRunner, FakeControlPlane, MemoryStore]:
    models = {v: f"model {v}".encode() for v in ("1.0.0", "1.0.1")}
    plane = FakeControlPlane(
        deployments=[_deployment("dep-1")],
        recipes={
            (TOY, "1.0.0"): _toy(dependency=dependency),
            (TOY, "1.1.0"): _toy("1.1.0", dependency=dependency),
            **{(MODEL, v): _model_recipe(v, data) for v, data in models.items()},
        },
    )
    store = MemoryStore({f"s3://bucket/m/{v}/model.onnx": data for v, data in models.items()})
    runner = local_runner(tmp_path / "root", plane, store)
    runner.deploy()
    assert runner.components[TOY].state is ComponentState.RUNNING
    return runner, plane, store


def _pid(runner: DeviceRunner) -> int:
    process = runner.components[TOY].process
    assert process is not None
    assert process.poll() is None, "the component is not running"
    return process.pid


def _counts(runner: DeviceRunner, expected: str) -> str:
    """The Run step's record of its starts, once it shows ``expected`` (or after a deadline)."""
    path = runner.components[TOY].context.work_path / "counts"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and path.read_text() == expected:
            break
        time.sleep(0.02)
    return path.read_text() if path.exists() else ""


def _statuses(plane: FakeControlPlane, deployment_id: str) -> list[str]:
    return [s.status for s in plane.statuses if s.deployment_id == deployment_id]


def test_no_new_deployment_changes_nothing_and_reports_nothing(tmp_path: Path) -> None:
    runner, plane, _store = _setup(tmp_path)
    with runner:
        reports = len(plane.statuses)
        assert runner.sync() is None
        assert len(plane.statuses) == reports


def test_a_new_soft_dependency_version_reaches_the_running_component_without_a_restart(
    tmp_path: Path,
) -> None:
    runner, plane, _store = _setup(tmp_path)
    with runner:
        pid = _pid(runner)
        plane.deployments = [_deployment("dep-2", model="1.0.1")]
        update = runner.sync()
        assert update is not None
        assert (update.installed, update.reconfigured, update.restarted) == ((MODEL,), (TOY,), ())
        assert _pid(runner) == pid
        config = json.loads(runner.components[TOY].config_file.read_text())
        assert config["model"] == {"version": "1.0.1"}
        artifact = tmp_path / "root/packages/artifacts/com.example.Model/1.0.1/model.onnx"
        assert artifact.read_bytes() == b"model 1.0.1"
        assert _statuses(plane, "dep-2") == ["IN_PROGRESS", "SUCCEEDED"]
        assert plane.statuses[-1].components == {MODEL: "FINISHED", TOY: "RUNNING"}
        # The Run step ran once: the process was never started again.
        assert _counts(runner, "3.0\n") == "3.0\n"


def test_a_configuration_change_that_changes_the_run_script_restarts(tmp_path: Path) -> None:
    runner, plane, _store = _setup(tmp_path)
    with runner:
        pid = _pid(runner)
        assert _counts(runner, "3.0\n") == "3.0\n"  # the first start has run its script
        plane.deployments = [_deployment("dep-2", merge={"greeting": "hi", "count": 5})]
        update = runner.sync()
        assert update is not None
        assert update.restarted == (TOY,)
        assert _pid(runner) != pid
        assert _counts(runner, "3.0\n5.0\n") == "3.0\n5.0\n"
        assert _statuses(plane, "dep-2") == ["IN_PROGRESS", "SUCCEEDED"]


def test_a_new_version_of_the_component_itself_restarts_it(tmp_path: Path) -> None:
    runner, plane, _store = _setup(tmp_path)
    with runner:
        pid = _pid(runner)
        plane.deployments = [_deployment("dep-2", toy="1.1.0")]
        update = runner.sync()
        assert update is not None
        assert update.installed == (TOY,)
        assert _pid(runner) != pid
        assert runner.components[TOY].plan.version == "1.1.0"
        assert plane.statuses[-1].status == "SUCCEEDED"


def test_a_new_hard_dependency_version_restarts_the_dependent(tmp_path: Path) -> None:
    runner, plane, _store = _setup(tmp_path, dependency="HARD")
    with runner:
        pid = _pid(runner)
        plane.deployments = [_deployment("dep-2", model="1.0.1")]
        update = runner.sync()
        assert update is not None
        assert (update.installed, update.reconfigured, update.restarted) == ((MODEL,), (), (TOY,))
        assert _pid(runner) != pid
        assert json.loads(runner.components[TOY].config_file.read_text())["model"] == {"version": "1.0.1"}


def test_a_failing_deployment_is_reported_keeps_the_old_one_running_and_is_not_retried(
    tmp_path: Path,
) -> None:
    runner, plane, store = _setup(tmp_path)
    with runner:
        pid = _pid(runner)
        config_before = runner.components[TOY].config_file.read_text()
        store.objects["s3://bucket/m/1.0.1/model.onnx"] = b"tampered"
        plane.deployments = [_deployment("dep-2", model="1.0.1")]
        with pytest.raises(DeviceError, match="does not match its recorded digest"):
            runner.sync()
        assert _statuses(plane, "dep-2") == ["IN_PROGRESS", "FAILED"]
        assert "ARTIFACT_CHECKSUM_MISMATCH" in (plane.statuses[-1].reason or "")
        # Everything was fetched before anything changed: the component runs on, on its old configuration.
        assert _pid(runner) == pid
        assert runner.components[MODEL].plan.version == "1.0.0"
        assert runner.components[TOY].config_file.read_text() == config_before
        assert runner.sync() is None


def test_a_component_left_out_of_the_new_deployment_is_stopped_and_removed(tmp_path: Path) -> None:
    runner, plane, _store = _setup(tmp_path)
    with runner:
        process = runner.components[TOY].process
        assert process is not None
        plane.deployments = [copy.deepcopy(_deployment("dep-2"))]
        del plane.deployments[0]["components"][TOY]
        update = runner.sync()
        assert update is not None
        assert update.removed == (TOY,)
        assert process.poll() is not None
        assert list(runner.components) == [MODEL]


def test_sync_before_a_first_deployment_is_refused(tmp_path: Path) -> None:
    plane = FakeControlPlane(deployments=[_deployment("dep-1")], recipes={})
    runner = DeviceRunner(
        thing_name="gw-01", root=tmp_path, control=plane, store=MemoryStore({}), policy=LocalPolicy()
    )
    with pytest.raises(DeviceError, match="gw-01 has applied no deployment yet: deploy\\(\\) first"):
        runner.sync()


FLEET_GROUP = "arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"
CANARY_GROUP = "arn:aws:iot:us-east-1:123456789012:thinggroup/canary"
CONFLICT = (
    "NoAvailableComponentVersionException: no version of com.example.Model satisfies the requirements of "
    f"all the device's targets: {FLEET_GROUP} requires =1.0.0, {CANARY_GROUP} requires =1.0.1"
)


def test_groups_pinning_different_versions_of_a_component_fail_the_new_deployment(tmp_path: Path) -> None:
    runner, plane, _store = _setup(tmp_path)
    with runner:
        pid = _pid(runner)
        # The device is in the fleet group and, by mistake, the canary group too, which got a new model.
        plane.deployments = [
            {**_deployment("dep-1"), "target_arn": FLEET_GROUP},
            {**_deployment("dep-2", model="1.0.1"), "target_arn": CANARY_GROUP},
        ]
        with pytest.raises(ComponentVersionConflictError) as caught:
            runner.sync()
        assert str(caught.value) == CONFLICT
        assert _statuses(plane, "dep-2") == ["IN_PROGRESS", "FAILED"]
        assert plane.statuses[-1].reason == CONFLICT
        # Nothing changed: neither deployment "won".
        assert _pid(runner) == pid
        assert runner.components[MODEL].plan.version == "1.0.0"


def test_a_first_deployment_with_conflicting_groups_is_reported_failed(tmp_path: Path) -> None:
    models = {v: f"model {v}".encode() for v in ("1.0.0", "1.0.1")}
    plane = FakeControlPlane(
        deployments=[
            {**_deployment("dep-1"), "target_arn": FLEET_GROUP},
            {**_deployment("dep-2", model="1.0.1"), "target_arn": CANARY_GROUP},
        ],
        recipes={
            (TOY, "1.0.0"): _toy(),
            **{(MODEL, v): _model_recipe(v, data) for v, data in models.items()},
        },
    )
    store = MemoryStore({f"s3://bucket/m/{v}/model.onnx": data for v, data in models.items()})
    runner = local_runner(tmp_path / "root", plane, store)
    with runner, pytest.raises(ComponentVersionConflictError, match="NoAvailableComponentVersionException"):
        runner.deploy()
    assert [(s.deployment_id, s.status, s.reason) for s in plane.statuses] == [
        ("dep-1", "FAILED", CONFLICT),
        ("dep-2", "FAILED", CONFLICT),
    ]
    assert runner.components == {}
