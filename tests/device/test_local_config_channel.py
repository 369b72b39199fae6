"""The configuration channel between the runner and the inference component (no nucleus, no IPC)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from greengrass_components.anomaly_detector.errors import ConfigError
from greengrass_components.anomaly_detector.hotswap import read_model_ref
from greengrass_components.anomaly_detector.local_config import FileConfigIpc

MODEL = {
    "component": "com.edgeml.AnomalyModel",
    "version": "1.0.1",
    "sha256": "ab" * 32,
    "modelVersion": "m1",
}


def _write(path: Path, config: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config))
    tmp.replace(path)


def test_get_configuration_feeds_the_model_reference(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _write(path, {"model": MODEL, "batchSize": 32})
    ipc = FileConfigIpc(path)
    assert ipc.get_configuration(key_path=["batchSize"]).value == 32
    ref = read_model_ref(ipc)
    assert (ref.version, ref.model_version) == ("1.0.1", "m1")


def test_subscription_fires_on_a_change_of_its_key_only(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _write(path, {"model": MODEL, "logLevel": "INFO"})
    ipc = FileConfigIpc(path, poll_s=0.02)
    events: list[Any] = []
    fired = threading.Event()

    def on_event(event: Any) -> None:
        events.append(event)
        fired.set()

    closed = threading.Event()
    _resp, op = ipc.subscribe_to_configuration_update(
        key_path=["model"],
        on_stream_event=on_event,
        on_stream_error=lambda _e: False,
        on_stream_closed=closed.set,
    )
    _write(path, {"model": MODEL, "logLevel": "DEBUG"})  # another key: no event
    assert not fired.wait(0.2)
    _write(path, {"model": {**MODEL, "version": "1.0.2"}, "logLevel": "DEBUG"})
    assert fired.wait(2)
    assert [e.key_path for e in events] == [["model"]]
    op.close()
    assert closed.wait(2)
    ipc.close()


def test_unreadable_file_is_a_stream_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _write(path, {"model": MODEL})
    ipc = FileConfigIpc(path, poll_s=0.02)
    errors: list[Exception] = []
    got = threading.Event()

    def on_error(exc: Exception) -> bool:
        errors.append(exc)
        got.set()
        return False

    ipc.subscribe_to_configuration_update(
        key_path=["model"],
        on_stream_event=lambda _e: None,
        on_stream_error=on_error,
        on_stream_closed=lambda: None,
    )
    path.write_text("{not json")
    assert got.wait(2)
    assert isinstance(errors[0], ConfigError)
    assert "cannot read local configuration" in str(errors[0])
    ipc.close()


def test_pub_sub_is_refused_with_a_pointer_to_mqtt(tmp_path: Path) -> None:
    ipc = FileConfigIpc(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="no local pub/sub: use --source mqtt"):
        ipc.subscribe_to_topic(topic="sensors/#")
    with pytest.raises(ConfigError, match="no IoT Core proxy: use --transport mqtt"):
        ipc.publish_to_iot_core(topic_name="edge/x/anomalies", qos="1", payload=b"{}")
