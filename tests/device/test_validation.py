"""The deployment's validation phase on a running device: real component processes that vote (or not)
over FileConfigIpc, and the runner failing or applying the deployment accordingly."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from device import ConfigurationValidationError
from device.lifecycle import ComponentState
from device.runner import DeviceRunner
from device.validation import NO_REPORT_PREFIX, REJECTED_PREFIX

from .helpers import FakeControlPlane, MemoryStore, local_runner, toy_recipe, zip_bytes

REPO = Path(__file__).resolve().parents[2]
TOY = "com.example.Toy"
# A component that votes through the same FileConfigIpc the inference component uses: it rejects the
# greeting "bad"; in mode "silent" it subscribes and never answers; in mode "none" it never subscribes.
VOTER = """
import os, sys, time
from pathlib import Path
from types import SimpleNamespace
from greengrass_components.anomaly_detector.local_config import FileConfigIpc

mode = sys.argv[1]
ipc = FileConfigIpc(Path(os.environ["EDGEML_LOCAL_CONFIG_FILE"]), poll_s=0.02)

def on_event(event):
    inner = event.validate_configuration_update_event
    if mode == "silent":
        return
    greeting = inner.configuration["greeting"]
    status = "REJECTED" if greeting == "bad" else "ACCEPTED"
    message = f"greeting {greeting!r}"
    report = SimpleNamespace(status=status, deployment_id=inner.deployment_id, message=message)
    ipc.send_configuration_validity_report(configuration_validity_report=report)

if mode != "none":
    ipc.subscribe_to_validate_configuration_updates(
        on_stream_event=on_event, on_stream_error=lambda e: False, on_stream_closed=lambda: None
    )
time.sleep(60)
"""


def _deployment(
    deployment_id: str, greeting: str, *, version: str = "1.0.0", timeout: int | None = None
) -> Any:
    view: dict[str, Any] = {
        "deployment_id": deployment_id,
        "created": float(deployment_id.rsplit("-", 1)[-1]),
        "components": {TOY: {"version": version, "merge": {"greeting": greeting}, "reset": []}},
    }
    if timeout is not None:
        view["configuration_validation_timeout_s"] = timeout
    return view


def _recipe(mode: str, version: str = "1.0.0") -> dict[str, Any]:
    recipe = toy_recipe(
        run={
            "Script": f"exec {sys.executable} {{artifacts:decompressedPath}}/toy/main.py {mode}",
            "Setenv": {"PYTHONPATH": str(REPO)},
        },
        ComponentVersion=version,
    )
    recipe["Manifests"][0]["Artifacts"][0]["URI"] = f"s3://bucket/toy/{version}/toy.zip"
    return recipe


def _runner(
    tmp_path: Path, mode: str, *, wait_subscribed: bool = True, next_version_mode: str | None = None
) -> tuple[DeviceRunner, FakeControlPlane]:
    plane = FakeControlPlane(
        deployments=[_deployment("dep-1", "hello")],
        recipes={
            (TOY, "1.0.0"): _recipe(mode),
            (TOY, "1.1.0"): _recipe(next_version_mode or mode, "1.1.0"),
        },
    )
    store = MemoryStore(
        {f"s3://bucket/toy/{v}/toy.zip": zip_bytes({"main.py": VOTER}) for v in ("1.0.0", "1.1.0")}
    )
    runner = local_runner(tmp_path / "root", plane, store)
    runner.deploy()
    if wait_subscribed:
        marker = runner.components[TOY].validation.marker
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), runner.components[TOY].logs.stderr.read_text()
    return runner, plane


def _greeting(runner: DeviceRunner) -> object:
    return json.loads(runner.components[TOY].config_file.read_text())["greeting"]


def _pid(runner: DeviceRunner) -> int:
    process = runner.components[TOY].process
    assert process is not None
    assert process.poll() is None
    return process.pid


def test_a_rejected_configuration_fails_the_deployment_and_is_not_applied(tmp_path: Path) -> None:
    runner, plane = _runner(tmp_path, "vote")
    with runner:
        pid = _pid(runner)
        plane.deployments = [_deployment("dep-2", "bad")]
        with pytest.raises(ConfigurationValidationError) as caught:
            runner.sync()
        reason = f"{REJECTED_PREFIX} {{ name = {TOY}, message = greeting 'bad' }}"
        assert str(caught.value) == reason
        assert [(s.deployment_id, s.status, s.reason) for s in plane.statuses[-2:]] == [
            ("dep-2", "IN_PROGRESS", None),
            ("dep-2", "FAILED", reason),
        ]
        assert plane.statuses[-1].components == {TOY: "RUNNING"}
        assert _greeting(runner) == "hello"
        assert runner.components[TOY].configuration["greeting"] == "hello"
        assert _pid(runner) == pid

        # The next good revision is validated and applied, to the same process.
        plane.deployments = [_deployment("dep-3", "hi")]
        update = runner.sync()
        assert update is not None
        assert update.reconfigured == (TOY,)
        assert [s.status for s in plane.statuses if s.deployment_id == "dep-3"] == [
            "IN_PROGRESS",
            "SUCCEEDED",
        ]
        assert _greeting(runner) == "hi"
        assert _pid(runner) == pid
        assert not runner.components[TOY].validation.proposal.exists()


def test_a_component_that_never_subscribed_is_not_waited_for(tmp_path: Path) -> None:
    runner, plane = _runner(tmp_path, "none", wait_subscribed=False)
    with runner:
        time.sleep(0.5)  # time enough to subscribe, if it were going to
        plane.deployments = [_deployment("dep-2", "bad", timeout=30)]
        started = time.monotonic()
        update = runner.sync()
        assert time.monotonic() - started < 5
        assert update is not None
        assert update.reconfigured == (TOY,)
        assert plane.statuses[-1].status == "SUCCEEDED"
        assert _greeting(runner) == "bad"
        assert not runner.components[TOY].validation.proposal.exists()


def test_no_report_within_the_deployments_timeout_fails_it(tmp_path: Path) -> None:
    runner, plane = _runner(tmp_path, "silent")
    with runner:
        plane.deployments = [_deployment("dep-2", "hi", timeout=1)]
        started = time.monotonic()
        with pytest.raises(ConfigurationValidationError):
            runner.sync()
        assert 1 <= time.monotonic() - started < 5
        assert plane.statuses[-1].status == "FAILED"
        assert plane.statuses[-1].reason == f"{NO_REPORT_PREFIX} {TOY} did not report within 1s"
        assert _greeting(runner) == "hello"


def test_a_new_version_is_not_asked_and_its_process_does_not_inherit_the_old_subscription(
    tmp_path: Path,
) -> None:
    # 1.0.0 votes; 1.1.0 never subscribes. The old process's subscription must not outlive it.
    runner, plane = _runner(tmp_path, "vote", next_version_mode="none")
    with runner:
        plane.deployments = [_deployment("dep-2", "bad", version="1.1.0")]
        update = runner.sync()
        assert update is not None
        assert update.installed == (TOY,)
        assert plane.statuses[-1].status == "SUCCEEDED"
        assert _greeting(runner) == "bad"
        assert runner.components[TOY].state is ComponentState.RUNNING
        assert not runner.components[TOY].validation.subscribed()

        plane.deployments = [_deployment("dep-3", "bad again", version="1.1.0", timeout=2)]
        update = runner.sync()
        assert update is not None
        assert update.reconfigured == (TOY,)
        assert plane.statuses[-1].status == "SUCCEEDED"
        assert _greeting(runner) == "bad again"
