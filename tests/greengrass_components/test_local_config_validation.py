"""The validation phase over files: FileConfigIpc (the component's side) against device.validation (the
runner's side), and the model watcher's veto through it."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from device.errors import ConfigurationValidationError
from device.validation import NO_REPORT_PREFIX, REJECTED_PREFIX, ValidationChannel, validate
from greengrass_components.anomaly_detector.errors import ConfigError
from greengrass_components.anomaly_detector.hotswap import ModelWatcher
from greengrass_components.anomaly_detector.local_config import (
    FileConfigIpc,
    ValidateConfigurationUpdateEvents,
    validity_file,
)
from greengrass_components.anomaly_detector.model import ModelLoader

from .conftest import ModelFactory

NAME = "com.edgeml.AnomalyDetector"


def _report(status: str, deployment_id: str | None, message: str | None = None) -> SimpleNamespace:
    # The attributes of the SDK's ConfigurationValidityReport.
    return SimpleNamespace(status=status, deployment_id=deployment_id, message=message)


class Subscriber:
    """A component side that answers every proposal with ``answer(event)`` (or not at all: None)."""

    def __init__(self, ipc: FileConfigIpc, answer: Any) -> None:
        self.ipc = ipc
        self.events: list[ValidateConfigurationUpdateEvents] = []
        self.errors: list[Exception] = []
        self.closed = threading.Event()
        self._answer = answer
        _resp, self.operation = ipc.subscribe_to_validate_configuration_updates(
            on_stream_event=self._on_event,
            on_stream_error=self._on_error,
            on_stream_closed=self.closed.set,
        )

    def _on_event(self, event: ValidateConfigurationUpdateEvents) -> None:
        self.events.append(event)
        report = self._answer(event.validate_configuration_update_event)
        if report is not None:
            self.ipc.send_configuration_validity_report(configuration_validity_report=report)

    def _on_error(self, exc: Exception) -> bool:
        self.errors.append(exc)
        return False


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config" / f"{NAME}.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"greeting": "hello"}))
    return path


@pytest.fixture
def ipc(config_file: Path) -> Iterator[FileConfigIpc]:
    client = FileConfigIpc(config_file, poll_s=0.01)
    yield client
    client.close()


def _alive(_name: str) -> bool:
    return True


def test_subscribing_marks_the_component_as_a_voter_and_closing_unmarks_it(
    config_file: Path, ipc: FileConfigIpc
) -> None:
    channel = ValidationChannel(config_file)
    assert not channel.subscribed()
    subscriber = Subscriber(ipc, lambda _e: None)
    assert channel.subscribed()
    assert json.loads(channel.marker.read_text()) == {"pid": os.getpid()}
    subscriber.operation.close()
    assert subscriber.closed.wait(2)
    assert not channel.subscribed()


def test_the_proposal_is_delivered_once_with_the_sdk_event_shape(
    config_file: Path, ipc: FileConfigIpc
) -> None:
    got = threading.Event()
    subscriber = Subscriber(ipc, lambda _e: got.set())
    channel = ValidationChannel(config_file)
    channel.propose("dep-2", {"greeting": "hi", "model": {"version": "1.0.1"}})
    assert got.wait(2)
    time.sleep(0.1)  # the proposal is still there: it must not be delivered again
    (event,) = subscriber.events
    inner = event.validate_configuration_update_event
    assert (inner.deployment_id, inner.configuration) == (
        "dep-2",
        {"greeting": "hi", "model": {"version": "1.0.1"}},
    )


def test_accepted_report_lets_the_runner_go_on_and_leaves_no_file_behind(
    config_file: Path, ipc: FileConfigIpc
) -> None:
    Subscriber(ipc, lambda e: _report("ACCEPTED", e.deployment_id, "fine"))
    channel = ValidationChannel(config_file)
    validate({NAME: (channel, {"greeting": "hi"})}, deployment_id="dep-2", timeout_s=5, running=_alive)
    assert not channel.proposal.exists()
    assert not channel.report_file("dep-2").exists()
    assert sorted(p.name for p in config_file.parent.iterdir()) == [f"{NAME}.json", f"{NAME}.validating"]


def test_rejected_report_fails_with_the_components_message(config_file: Path, ipc: FileConfigIpc) -> None:
    def answer(event: Any) -> SimpleNamespace:
        return _report(
            "REJECTED", event.deployment_id, f"greeting {event.configuration['greeting']!r} refused"
        )

    Subscriber(ipc, answer)
    channel = ValidationChannel(config_file)
    with pytest.raises(ConfigurationValidationError) as caught:
        validate({NAME: (channel, {"greeting": "bad"})}, deployment_id="dep-2", timeout_s=5, running=_alive)
    assert str(caught.value) == f"{REJECTED_PREFIX} {{ name = {NAME}, message = greeting 'bad' refused }}"
    assert not channel.proposal.exists()


def test_no_report_within_the_timeout_fails(config_file: Path, ipc: FileConfigIpc) -> None:
    subscriber = Subscriber(ipc, lambda _e: None)
    channel = ValidationChannel(config_file)
    started = time.monotonic()
    with pytest.raises(ConfigurationValidationError) as caught:
        validate({NAME: (channel, {"greeting": "hi"})}, deployment_id="dep-2", timeout_s=0.3, running=_alive)
    assert 0.3 <= time.monotonic() - started < 2
    assert str(caught.value) == f"{NO_REPORT_PREFIX} {NAME} did not report within 0.3s"
    assert len(subscriber.events) == 1


def test_a_component_that_exits_is_not_waited_for(config_file: Path) -> None:
    channel = ValidationChannel(config_file)
    started = time.monotonic()
    with pytest.raises(ConfigurationValidationError, match=f"{NAME} exited before it reported"):
        validate(
            {NAME: (channel, {"greeting": "hi"})},
            deployment_id="dep-2",
            timeout_s=30,
            running=lambda _n: False,
        )
    assert time.monotonic() - started < 1


def test_nothing_to_validate_writes_nothing(config_file: Path) -> None:
    validate({}, deployment_id="dep-2", timeout_s=30, running=_alive)
    assert [p.name for p in config_file.parent.iterdir()] == [f"{NAME}.json"]


def test_both_sides_replace_their_files_instead_of_rewriting_them(
    config_file: Path, ipc: FileConfigIpc
) -> None:
    channel = ValidationChannel(config_file)
    channel.propose("dep-2", {"greeting": "a"})
    first = channel.proposal.stat().st_ino
    channel.propose("dep-3", {"greeting": "b"})
    # A new inode: renamed into place, so a reader sees the old document or the new one, never half.
    assert channel.proposal.stat().st_ino != first
    report = channel.report_file("dep-3")
    ipc.send_configuration_validity_report(configuration_validity_report=_report("ACCEPTED", "dep-3", "ok"))
    first = report.stat().st_ino
    ipc.send_configuration_validity_report(configuration_validity_report=_report("REJECTED", "dep-3", "no"))
    assert report.stat().st_ino != first
    assert json.loads(report.read_text()) == {"deploymentId": "dep-3", "status": "REJECTED", "message": "no"}
    assert not [p for p in config_file.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("deployment_id", ["0c8e6f0e-2b0f-4c53-9d0a-1f0e3c1d2e3f", "../../x", "a b~é"])
def test_both_sides_name_the_report_file_alike_and_keep_it_in_the_folder(
    config_file: Path, deployment_id: str
) -> None:
    path = ValidationChannel(config_file).report_file(deployment_id)
    assert path == validity_file(config_file, deployment_id)
    assert path.parent == config_file.parent


def test_a_report_without_a_valid_status_or_deployment_is_refused(ipc: FileConfigIpc) -> None:
    with pytest.raises(ConfigError, match="validity status must be one of"):
        ipc.send_configuration_validity_report(configuration_validity_report=_report("VALID", "dep-2"))
    with pytest.raises(ConfigError, match="needs the deployment_id"):
        ipc.send_configuration_validity_report(configuration_validity_report=_report("ACCEPTED", None))


def test_a_malformed_proposal_is_a_stream_error_not_a_crash(config_file: Path, ipc: FileConfigIpc) -> None:
    subscriber = Subscriber(ipc, lambda _e: None)
    channel = ValidationChannel(config_file)
    channel.proposal.write_text(json.dumps({"configuration": {}}))
    deadline = time.monotonic() + 2
    while not subscriber.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(subscriber.errors[0], ConfigError)
    assert "needs 'deploymentId' and 'configuration'" in str(subscriber.errors[0])
    channel.propose("dep-2", {"greeting": "hi"})  # the stream is still open
    while not subscriber.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert subscriber.events[0].validate_configuration_update_event.deployment_id == "dep-2"


def _model_config(kernel_root: Path, model: Path, version: str) -> dict[str, Any]:
    artifact = kernel_root / "packages" / "artifacts" / "com.edgeml.AnomalyModel" / version / "model.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(model.read_bytes())
    sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    return {"model": {"component": "com.edgeml.AnomalyModel", "version": version, "sha256": sha}}


def test_the_model_watcher_vetoes_a_model_that_fails_validation_through_the_file_channel(
    tmp_path: Path, config_file: Path, ipc: FileConfigIpc, make_model: ModelFactory
) -> None:
    kernel = tmp_path / "kernel"
    good = _model_config(kernel, make_model(), "1.0.1")
    bad = _model_config(kernel, make_model(drop_keys=("threshold",)), "1.0.2")
    watcher = ModelWatcher(ipc, loader=ModelLoader(), kernel_root=kernel, current=None)
    watcher.start_validation(ipc)
    channel = ValidationChannel(config_file)
    assert channel.subscribed()
    validate({NAME: (channel, good)}, deployment_id="dep-2", timeout_s=10, running=_alive)
    with pytest.raises(ConfigurationValidationError) as caught:
        validate({NAME: (channel, bad)}, deployment_id="dep-3", timeout_s=10, running=_alive)
    assert str(caught.value).startswith(
        f"{REJECTED_PREFIX} {{ name = {NAME}, message = model 1.0.2 fails validation"
    )
    assert "threshold" in str(caught.value)
    assert watcher.rejected == 1
    watcher.close()
