"""Device wiring with a fake Greengrass IPC client: model from configuration, IPC source and transport."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from greengrass_components.anomaly_detector.app import build_runtime
from greengrass_components.anomaly_detector.config import parse_config
from greengrass_components.anomaly_detector.events import iso_utc

from .helpers import SPIKE_INDEX, T0, series


class FakeGreengrassIpc:
    def __init__(self, model_config: dict[str, Any]) -> None:
        self.model_config = model_config
        self.topic_kwargs: dict[str, Any] = {}
        self.validate_kwargs: dict[str, Any] = {}
        self.published: list[dict[str, Any]] = []
        self.got_anomaly = threading.Event()
        self.closed = False

    def get_configuration(self, *, key_path: list[str]) -> SimpleNamespace:
        assert key_path == ["model"]
        return SimpleNamespace(value=self.model_config)

    def subscribe_to_configuration_update(self, **_kwargs: Any) -> tuple[object, object]:
        return object(), SimpleNamespace(close=lambda: None)

    def subscribe_to_validate_configuration_updates(self, **kwargs: Any) -> tuple[object, object]:
        self.validate_kwargs = kwargs
        return object(), SimpleNamespace(close=lambda: None)

    def subscribe_to_topic(self, **kwargs: Any) -> tuple[object, object]:
        self.topic_kwargs = kwargs
        return object(), SimpleNamespace(close=lambda: None)

    def sensor_sends(self, values: list[float], topic: str = "sensors/pump-1") -> None:
        """Each value as one local pub/sub JSON message on ``topic``, as the nucleus delivers them."""
        context = SimpleNamespace(topic=topic)
        for i, value in enumerate(values):
            message = {"timestamp": T0 + i, "values": {"value": value}}
            self.topic_kwargs["on_stream_event"](
                SimpleNamespace(
                    json_message=SimpleNamespace(message=message, context=context), binary_message=None
                )
            )

    def publish_to_iot_core(self, **kwargs: Any) -> None:
        self.published.append(kwargs)
        if kwargs["topic_name"].endswith("/anomalies"):
            self.got_anomaly.set()

    def close(self) -> None:
        self.closed = True


def test_device_mode_reads_model_from_configuration_and_publishes_over_ipc(
    tmp_path: Path, model_path: Path
) -> None:
    artifact = tmp_path / "packages" / "artifacts" / "com.edgeml.AnomalyModel" / "1.0.0" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    shutil.copy(model_path, artifact)
    sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    ipc = FakeGreengrassIpc({"component": "com.edgeml.AnomalyModel", "version": "1.0.0", "sha256": sha})
    # The recipe's Run line, with configuration interpolated the way the nucleus does (numbers as floats).
    config = parse_config(
        ["--kernel-root", str(tmp_path), "--source", "ipc", "--transport", "ipc",
         "--sensor-topic", "sensors/#", "--anomaly-topic", "edge/{iot:thingName}/anomalies",
         "--batch-size", "4.0", "--max-wait-ms", "50.0", "--health-interval-s", "0.0"],
        env={"AWS_IOT_THING_NAME": "gw-dev"},
    )  # fmt: skip
    stop = threading.Event()
    with build_runtime(config, ipc_factory=lambda: ipc) as runtime:
        assert ipc.topic_kwargs["topic"] == "sensors/#"
        # The model watcher takes part in the deployment's validation phase.
        assert set(ipc.validate_kwargs) == {"on_stream_event", "on_stream_error", "on_stream_closed"}
        worker = threading.Thread(target=lambda: runtime.app.run(stop))
        worker.start()
        try:
            ipc.sensor_sends(series())
            assert ipc.got_anomaly.wait(5)
            # the anomaly is the 20th sample: let the loop drain the rest before stopping it
            deadline = time.monotonic() + 5
            while runtime.app.stats.samples_in < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            worker.join(5)
        stats = runtime.app.stats
    assert ipc.closed
    (call,) = ipc.published
    assert call["topic_name"] == "edge/gw-dev/anomalies"
    assert call["qos"] == "1"
    event = json.loads(call["payload"])
    assert event["stream"] == "pump-1"
    assert event["thing_name"] == "gw-dev"
    assert stats.samples_in == 40
    assert stats.anomaly_timestamps == [event["timestamp"]]
    assert event["timestamp"] == iso_utc(T0 + SPIKE_INDEX)
