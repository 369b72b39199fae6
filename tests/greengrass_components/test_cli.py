"""End to end: the component as a subprocess (``python -m anomaly_detector`` from the artifact folder)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import greengrass_components

from .helpers import series

# The folder that holds the package, like {artifacts:decompressedPath} on a device.
ARTIFACT_PARENT = Path(greengrass_components.__file__).parent
SPIKES = (25, 60, 90)


def write_csv(path: Path) -> list[str]:
    values = series(n=120, spike_at=None)
    for index in SPIKES:
        values[index] += 10.0
    start = datetime(2013, 12, 2, 21, 15, tzinfo=UTC)
    stamps = [start + timedelta(minutes=5 * i) for i in range(len(values))]
    rows = [f"{t.strftime('%Y-%m-%d %H:%M:%S')},{v:.4f}" for t, v in zip(stamps, values, strict=True)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    return [stamps[i].strftime("%Y-%m-%dT%H:%M:%SZ") for i in SPIKES]


def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "AWS_IOT_THING_NAME"}}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "anomaly_detector", *args],
        cwd=ARTIFACT_PARENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_file_replay_forwards_exactly_the_spikes_to_a_real_broker(
    tmp_path: Path, model_path: Path, mosquitto: int
) -> None:
    expected = write_csv(tmp_path / "data.csv")
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    ready: queue.Queue[bool] = queue.Queue()
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, m: received.put((m.topic, bytes(m.payload)))
    sub.on_subscribe = lambda *_a: ready.put(True)
    sub.on_connect = lambda c, *_a: c.subscribe("edge/#", qos=1)
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    try:
        ready.get(timeout=5)
        stats_path = tmp_path / "stats.json"
        result = run_cli(
            "--model", str(model_path),
            "--source", "file", "--file", str(tmp_path / "data.csv"), "--stream", "machine_temperature",
            "--transport", "mqtt", "--mqtt-port", str(mosquitto),
            "--batch-size", "16", "--stats-json", str(stats_path),
            env_extra={"AWS_IOT_THING_NAME": "gw-e2e"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        messages = [received.get(timeout=5) for _ in SPIKES]
    finally:
        sub.disconnect()
        sub.loop_stop()

    assert {topic for topic, _ in messages} == {"edge/gw-e2e/anomalies"}
    events = [json.loads(payload) for _, payload in messages]
    assert [e["timestamp"] for e in events] == expected
    assert {e["thing_name"] for e in events} == {"gw-e2e"}
    assert {e["stream"] for e in events} == {"machine_temperature"}
    assert received.empty()  # nothing but anomalies was sent

    assert summary["anomaly_timestamps"] == expected
    assert summary["samples_in"] == 120
    assert summary["windows_scored"] == 113
    assert summary["anomalies_forwarded"] == 3
    assert summary["bytes_forwarded"] == sum(len(p) for _, p in messages)
    assert summary["raw_bytes_in"] == len((tmp_path / "data.csv").read_bytes()) - len("timestamp,value\n")
    assert summary["model_version"] == "20261124T201500Z-test0001"
    assert summary["samples_per_s"] > 0
    assert json.loads(stats_path.read_text()) == summary
    # logs are JSON lines on stderr
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(entry["message"] == "model loaded" for entry in logs)


def test_corrupt_model_exits_3_with_clear_log(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv")
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    result = run_cli(
        "--model", str(tmp_path / "bad.onnx"), "--thing-name", "gw",
        "--file", str(tmp_path / "data.csv"), "--stream", "s", "--transport", "memory",
    )  # fmt: skip
    assert result.returncode == 3
    (entry,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert entry["message"] == "model refused"
    assert "onnxruntime cannot load model" in entry["error"]
    assert result.stdout == ""


def test_missing_thing_name_exits_2(tmp_path: Path, model_path: Path) -> None:
    result = run_cli("--model", str(model_path), "--file", "x.csv", "--stream", "s")
    assert result.returncode == 2
    assert "thing name is required" in json.loads(result.stderr)["error"]
