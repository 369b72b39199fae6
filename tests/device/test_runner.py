"""The runner end to end on a tiny real component: real subprocesses, real files, recorded reports."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from device import DeviceError, LifecycleError, UnsupportedRecipeError
from device.lifecycle import ComponentState
from device.runner import DeviceRunner, dependency_order

from .helpers import MemoryStore, local_runner, toy_plane, toy_recipe, toy_store, zip_bytes


def _runner(tmp_path: Path, plane: object, store: object | None = None, **policy: object) -> DeviceRunner:
    return local_runner(tmp_path / "root", plane, store, **policy)  # type: ignore[arg-type]


def _wait_state(runner: DeviceRunner, name: str, state: ComponentState) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if runner.refresh()[name] is state:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {state}: {runner.refresh()}")


def test_runs_the_recipe_with_variables_configuration_and_environment(tmp_path: Path) -> None:
    recipe = toy_recipe(digest_of=toy_store().objects["s3://bucket/toy/1.0.0/toy.zip"])
    plane = toy_plane(recipe, merge={"greeting": "hi there"})
    with _runner(tmp_path, plane) as runner:
        applied = runner.deploy()
        _wait_state(runner, "com.example.Toy", ComponentState.FINISHED)
        out = json.loads(runner.stdout("com.example.Toy"))
    root = (tmp_path / "root").resolve()
    work = root / "work" / "com.example.Toy"
    # Merged configuration, numbers as the nucleus prints them, the thing name, the work folder as cwd.
    assert out == {
        "argv": ["hi there", "3.0", "gw-01"],
        "greeting": "hi there",
        "thing": "gw-01",
        "cwd": str(work),
        "phase_env": f"run in {work}",
    }
    assert applied.deployment_ids == ("dep-1",)
    assert [(s.deployment_id, s.status, s.components) for s in plane.statuses] == [
        ("dep-1", "SUCCEEDED", {"com.example.Toy": "RUNNING"})
    ]
    assert plane.periodic[0] == {"com.example.Toy": "FINISHED"}
    artifact = root / "packages" / "artifacts" / "com.example.Toy" / "1.0.0" / "toy.zip"
    # Permission defaults: Read OWNER, Execute NONE.
    assert stat.S_IMODE(artifact.stat().st_mode) == stat.S_IRUSR | stat.S_IWUSR


def test_install_runs_before_run_and_skipif_skips_it(tmp_path: Path) -> None:
    install = {"Script": "echo installed >> {work:path}/install.log", "Skipif": "exists {work:path}/skip-me"}
    plane = toy_plane(toy_recipe(install=install))
    with _runner(tmp_path, plane) as runner:
        runner.deploy()
    work = (tmp_path / "root" / "work" / "com.example.Toy").resolve()
    assert (work / "install.log").read_text() == "installed\n"

    (work / "skip-me").touch()
    (work / "install.log").unlink()
    with _runner(tmp_path, toy_plane(toy_recipe(install=install))) as runner:
        runner.deploy()
    assert not (work / "install.log").exists()


def test_failing_install_breaks_the_component_and_fails_the_deployment(tmp_path: Path) -> None:
    plane = toy_plane(toy_recipe(install="echo no disk >&2; exit 7"))
    runner = _runner(tmp_path, plane)
    with pytest.raises(LifecycleError, match=r"com\.example\.Toy Install exited with code 7"):
        runner.deploy()
    assert runner.components["com.example.Toy"].state is ComponentState.BROKEN
    assert plane.statuses[-1].status == "FAILED"
    assert "exited with code 7" in (plane.statuses[-1].reason or "")
    assert "no disk" in (tmp_path / "root" / "logs" / "com.example.Toy.log").read_text()


def test_artifact_with_a_wrong_digest_is_refused(tmp_path: Path) -> None:
    plane = toy_plane(toy_recipe(digest_of=b"something else"))
    with pytest.raises(DeviceError, match="does not match its recorded digest"):
        _runner(tmp_path, plane).deploy()
    assert plane.statuses[-1].status == "FAILED"


def test_unsupported_recipe_feature_is_refused_before_anything_runs(tmp_path: Path) -> None:
    recipe = toy_recipe()
    recipe["Manifests"][0]["Lifecycle"]["Shutdown"] = "echo bye"
    plane = toy_plane(recipe)
    with pytest.raises(UnsupportedRecipeError, match=r"lifecycle phase\(s\) \['Shutdown'\] is not supported"):
        _runner(tmp_path, plane).deploy()
    assert not (tmp_path / "root" / "packages").exists()
    assert plane.statuses[-1].status == "FAILED"


def test_configuration_reset_is_refused(tmp_path: Path) -> None:
    plane = toy_plane(toy_recipe())
    plane.deployments[0]["components"]["com.example.Toy"]["reset"] = ["/greeting"]
    with pytest.raises(UnsupportedRecipeError, match=r"configurationUpdate\.reset is not supported"):
        _runner(tmp_path, plane).deploy()


def test_interpolate_component_configuration_resolves_thing_name(tmp_path: Path) -> None:
    merge = {"greeting": "sensors/{iot:thingName}/#"}
    with _runner(
        tmp_path, toy_plane(toy_recipe(), merge), interpolate_component_configuration=True
    ) as runner:
        runner.deploy()
        _wait_state(runner, "com.example.Toy", ComponentState.FINISHED)
        assert json.loads(runner.stdout("com.example.Toy"))["greeting"] == "sensors/gw-01/#"
    # Off (the nucleus default), the value reaches the component as written.
    with _runner(tmp_path / "b", toy_plane(toy_recipe(), merge)) as runner:
        runner.deploy()
        _wait_state(runner, "com.example.Toy", ComponentState.FINISHED)
        assert json.loads(runner.stdout("com.example.Toy"))["greeting"] == "sensors/{iot:thingName}/#"


def test_stop_terminates_a_running_component_and_update_rewrites_its_configuration(tmp_path: Path) -> None:
    plane = toy_plane(toy_recipe(run="exec sleep 30"))
    runner = _runner(tmp_path, plane, reuse_python="/usr/bin/python3")
    runner.deploy()
    record = runner.components["com.example.Toy"]
    assert record.state is ComponentState.RUNNING
    runner.update_configuration("com.example.Toy", {"greeting": "updated"})
    assert json.loads(record.config_file.read_text()) == {"count": 3, "greeting": "updated"}
    started = time.monotonic()
    assert runner.stop() == {"com.example.Toy": -15}
    assert time.monotonic() - started < 4
    assert runner.components["com.example.Toy"].state.value == "FINISHED"
    assert plane.periodic[-1] == {"com.example.Toy": "FINISHED"}
    with pytest.raises(DeviceError, match=r"com\.example\.Other is not installed on gw-01"):
        runner.update_configuration("com.example.Other", {})


def test_a_crashing_run_is_errored(tmp_path: Path) -> None:
    with _runner(tmp_path, toy_plane(toy_recipe(run="exit 3"))) as runner:
        runner.deploy()
        _wait_state(runner, "com.example.Toy", ComponentState.ERRORED)
        assert runner.components["com.example.Toy"].exit_code == 3


def test_dependencies_install_first_and_must_be_in_the_deployment(tmp_path: Path) -> None:
    model = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Model",
        "ComponentVersion": "1.0.2",
        "Manifests": [
            {"Platform": {"os": "linux"}, "Lifecycle": {}, "Artifacts": [{"URI": "s3://bucket/m/model.onnx"}]}
        ],
    }
    toy = toy_recipe(ComponentDependencies={"com.example.Model": {"VersionRequirement": ">=1.0.0 <2.0.0"}})
    plane = toy_plane(toy)
    plane.recipes[("com.example.Model", "1.0.2")] = model
    plane.deployments[0]["components"]["com.example.Model"] = {"version": "1.0.2", "merge": None}
    store = MemoryStore({**toy_store().objects, "s3://bucket/m/model.onnx": b"onnx bytes"})
    with _runner(tmp_path, plane, store) as runner:
        runner.deploy()
        assert list(runner.components) == ["com.example.Model", "com.example.Toy"]
        assert runner.components["com.example.Model"].state is ComponentState.FINISHED
    placed = tmp_path / "root" / "packages" / "artifacts" / "com.example.Model" / "1.0.2" / "model.onnx"
    assert placed.read_bytes() == b"onnx bytes"

    del plane.deployments[0]["components"]["com.example.Model"]
    with pytest.raises(DeviceError, match=r"depends on com\.example\.Model, which is not in the deployment"):
        _runner(tmp_path / "c", plane, store).deploy()


def test_dependency_version_out_of_range_is_refused() -> None:
    from device.recipe import ComponentPlan, Dependency

    def plan(name: str, version: str, deps: tuple[Dependency, ...] = ()) -> ComponentPlan:
        return ComponentPlan(name, version, {}, deps, (), {}, None, None)

    plans = {"a": plan("a", "1.0.0", (Dependency("b", ">=2.0.0", True),)), "b": plan("b", "1.5.0")}
    with pytest.raises(DeviceError, match=r"a needs b >=2.0.0; the deployment has 1.5.0"):
        dependency_order(plans)


def test_zip_with_path_traversal_is_refused(tmp_path: Path) -> None:
    store = MemoryStore({"s3://bucket/toy/1.0.0/toy.zip": zip_bytes({"../evil.py": "x"})})
    with pytest.raises(DeviceError, match=r"unsafe entry '\.\./evil\.py'"):
        _runner(tmp_path, toy_plane(toy_recipe()), store).deploy()
