"""The inference component, run by the local device runner from its real recipe, vetoes a deployment whose
model fails validation: the deployment is FAILED with the component's reason, the running model stays, and
the next good revision is applied. Real processes: the runner's component process and mosquitto."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device import ConfigurationValidationError
from device.runner import DeviceRunner, LocalPolicy
from device.validation import REJECTED_PREFIX
from greengrass_components.packaging import build_archive, render_recipe
from tests.device.helpers import FakeControlPlane, MemoryStore

from .conftest import ModelFactory

REPO = Path(__file__).resolve().parents[2]
COMPONENT_DIR = REPO / "greengrass_components" / "anomaly_detector"
THING = "gw-01"
DETECTOR = "com.edgeml.AnomalyDetector"
MODEL = "com.edgeml.AnomalyModel"
ARCHIVE_URI = f"s3://bucket/components/{DETECTOR}/1.0.0/anomaly_detector.zip"
DEADLINE_S = 30.0


def _model_uri(version: str) -> str:
    return f"s3://bucket/components/{MODEL}/{version}/model.onnx"


def _model_recipe(version: str) -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": MODEL,
        "ComponentVersion": version,
        "Manifests": [
            {"Platform": {"os": "linux"}, "Lifecycle": {}, "Artifacts": [{"URI": _model_uri(version)}]}
        ],
    }


class Heartbeats:
    """The component's heartbeats on edge/<thing>/health, as the cloud would receive them."""

    def __init__(self, port: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-health")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"edge/{THING}/health", qos=1)
        self._client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.bodies.append(json.loads(message.payload))

    def wait_for(self, what: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            with self._lock:
                latest = self.bodies[-1] if self.bodies else None
            if latest is not None and condition(latest):
                return latest
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last heartbeat: {latest}")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def test_a_model_the_component_refuses_fails_the_deployment_and_the_running_model_stays(
    tmp_path: Path, make_model: ModelFactory, mosquitto: int
) -> None:
    archive = build_archive(COMPONENT_DIR, tmp_path / "build")
    models = {
        "1.0.0": make_model(metadata={"model_version": "mt-a"}).read_bytes(),
        # The threshold is part of the model contract: without it the model fails validation.
        "1.0.1": make_model(metadata={"model_version": "mt-b"}, drop_keys=("threshold",)).read_bytes(),
        "1.0.2": make_model(metadata={"model_version": "mt-c"}).read_bytes(),
    }

    def deployment(number: int, model_version: str) -> dict[str, Any]:
        merge = {
            "source": "mqtt",
            "transport": "mqtt",
            "mqttHost": "127.0.0.1",
            "mqttPort": mosquitto,
            "sensorTopic": f"sensors/{THING}/#",
            "healthIntervalSeconds": 0.2,
            "model": {
                "component": MODEL,
                "version": model_version,
                "sha256": hashlib.sha256(models[model_version]).hexdigest(),
            },
        }
        return {
            "deployment_id": f"dep-{number}",
            "created": float(number),
            "components": {
                DETECTOR: {"version": "1.0.0", "merge": merge, "reset": []},
                MODEL: {"version": model_version, "merge": None, "reset": []},
            },
        }

    plane = FakeControlPlane(
        deployments=[deployment(1, "1.0.0")],
        recipes={
            (DETECTOR, "1.0.0"): render_recipe(
                COMPONENT_DIR / "recipe.yaml", component_version="1.0.0", artifact_uri=ARCHIVE_URI
            ),
            **{(MODEL, v): _model_recipe(v) for v in models},
        },
    )
    store = MemoryStore(
        {ARCHIVE_URI: archive.path.read_bytes(), **{_model_uri(v): data for v, data in models.items()}}
    )
    runner = DeviceRunner(
        thing_name=THING,
        root=tmp_path / "device",
        control=plane,
        store=store,
        policy=LocalPolicy(reuse_python=sys.executable),
    )
    heartbeats = Heartbeats(mosquitto)
    try:
        with runner:
            runner.deploy()
            detector = runner.components[DETECTOR]
            heartbeats.wait_for("model A", lambda h: h["model_version"] == "mt-a")
            # The model watcher subscribes to validation once the first model is loaded.
            assert detector.validation.subscribed()
            assert detector.process is not None
            pid = detector.process.pid

            plane.deployments = [deployment(2, "1.0.1")]
            with pytest.raises(ConfigurationValidationError) as caught:
                runner.sync()
            reason = str(caught.value)
            assert reason.startswith(f"{REJECTED_PREFIX} {{ name = {DETECTOR}, message = model 1.0.1 fails")
            assert "threshold" in reason
            failed = plane.statuses[-1]
            assert (failed.deployment_id, failed.status, failed.reason) == ("dep-2", "FAILED", reason)
            # Nothing was applied: the device still reports the old model component, and the configuration
            # file still names it.
            assert failed.components == {MODEL: "FINISHED", DETECTOR: "RUNNING"}
            assert runner.components[MODEL].plan.version == "1.0.0"
            assert json.loads(detector.config_file.read_text())["model"]["version"] == "1.0.0"
            refused = heartbeats.wait_for("the veto counted", lambda h: h["models_rejected"] == 1)
            assert (refused["model_version"], refused["model_swaps"]) == ("mt-a", 0)

            plane.deployments = [deployment(3, "1.0.2")]
            update = runner.sync()
            assert update is not None
            assert (update.installed, update.reconfigured) == ((MODEL,), (DETECTOR,))
            assert [s.status for s in plane.statuses if s.deployment_id == "dep-3"] == [
                "IN_PROGRESS",
                "SUCCEEDED",
            ]
            swapped = heartbeats.wait_for("model C", lambda h: h["model_version"] == "mt-c")
            assert (swapped["model_swaps"], swapped["models_rejected"]) == (1, 1)
            assert detector.process.pid == pid
    finally:
        heartbeats.close()
    summary = json.loads(runner.stdout(DETECTOR).splitlines()[-1])
    assert (summary["model_version"], summary["model_swaps"], summary["models_rejected"]) == ("mt-c", 1, 1)
