"""Store and forward against a real mosquitto: a broker outage and a kill -9 of the component lose nothing.

The broker keeps the cloud listener's persistent session across its own restarts (persistence on,
clean_session off), so whatever the component sends after an outage is queued for the listener even
before the listener reconnects: what the listener ends up with is exactly what reached the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import greengrass_components
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import MqttSettings, MqttTransport
from standins.processes import ManagedProcess

from .helpers import series, start_subscribed, wait_until

ARTIFACT_PARENT = Path(greengrass_components.__file__).parent


class CloudListener:
    def __init__(self, port: int) -> None:
        self.messages: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"cloud-{port}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._client.reconnect_delay_set(1, 1)
        start_subscribed(self._client, port, [("edge/+/anomalies", 1)], self._on_message)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))

    def wait_for_ids(self, ids: set[str], timeout_s: float) -> set[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= self.ids():
                break
            time.sleep(0.05)
        return self.ids()

    def ids(self) -> set[str]:
        with self._lock:
            return {str(m["event_id"]) for m in self.messages}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_broker_outage_loses_nothing_and_keeps_per_stream_order(
    tmp_path: Path, broker: ManagedProcess
) -> None:
    listener = CloudListener(broker.port)
    spool = Spool(tmp_path / "spool.db")
    settings = MqttSettings(port=broker.port, publish_timeout_s=2, reconnect_min_s=1, reconnect_max_s=1)
    transport = MqttTransport(settings)
    forwarder = Forwarder(spool, transport, retry_initial_s=0.1, retry_max_s=0.5)
    forwarder.start()

    def put(event_id: str, stream: str) -> None:
        payload = json.dumps({"event_id": event_id, "stream": stream}).encode()
        spool.put(
            event_id=event_id, stream=stream, topic="edge/gw/anomalies", payload=payload, created_at=0.0
        )
        forwarder.notify()

    try:
        for event_id, stream in (("a1", "a"), ("b1", "b"), ("a2", "a")):
            put(event_id, stream)
        assert listener.wait_for_ids({"a1", "b1", "a2"}, 10) == {"a1", "b1", "a2"}

        broker.stop()  # outage
        for event_id, stream in (("a3", "a"), ("b2", "b"), ("a4", "a"), ("b3", "b")):
            put(event_id, stream)
        assert wait_until(lambda: forwarder.send_failures > 0, 5)
        assert spool.depth == 4  # nothing sent, nothing lost

        broker.start()  # same port, same persistent sessions
        everything = {"a1", "a2", "a3", "a4", "b1", "b2", "b3"}
        assert listener.wait_for_ids(everything, 20) == everything
        assert wait_until(lambda: spool.depth == 0, 5)
    finally:
        forwarder.close()
        transport.close()
        listener.close()

    first_seen: list[dict[str, object]] = []
    for message in listener.messages:  # at-least-once: drop re-deliveries the way the cloud would
        if message["event_id"] not in {m["event_id"] for m in first_seen}:
            first_seen.append(message)
    assert [m["event_id"] for m in first_seen if m["stream"] == "a"] == ["a1", "a2", "a3", "a4"]
    assert [m["event_id"] for m in first_seen if m["stream"] == "b"] == ["b1", "b2", "b3"]


def write_csv(path: Path, spikes: tuple[int, ...], n: int = 120) -> None:
    values = series(n=n, spike_at=None)
    for index in spikes:
        values[index] += 10.0
    start = datetime(2013, 12, 2, 21, 15, tzinfo=UTC)
    rows = [f"{(start + timedelta(minutes=5 * i)).isoformat()},{v:.4f}" for i, v in enumerate(values)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")


def component(
    model: Path, *, csv: Path, spool: Path, port: int, log: Path, speed: float
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "AWS_IOT_THING_NAME"}}
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                sys.executable, "-m", "anomaly_detector", "--thing-name", "gw-kill", "--model", str(model),
                "--source", "file", "--file", str(csv), "--stream", "pump", "--speed", str(speed),
                "--transport", "mqtt", "--mqtt-port", str(port), "--spool", str(spool),
                "--health-interval-s", "0", "--drain-timeout-s", "30",
            ],
            cwd=ARTIFACT_PARENT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def spooled_ids(log: Path) -> set[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return {str(e["event_id"]) for e in lines if e.get("message") == "anomaly event"}


def test_kill_9_during_an_outage_loses_no_event(
    tmp_path: Path, model_path: Path, broker: ManagedProcess
) -> None:
    listener = CloudListener(broker.port)
    csv, spool, log = tmp_path / "data.csv", tmp_path / "spool.db", tmp_path / "component.log"
    write_csv(csv, spikes=(25, 70, 90, 110))
    # 5-minute rows at 12,000x: 40 rows/s, the whole file in about 3 s.
    proc = component(model_path, csv=csv, spool=spool, port=broker.port, log=log, speed=12_000)
    try:
        assert wait_until(lambda: len(listener.ids()) == 1, 20), log.read_text()[-2000:]
        broker.stop()  # outage from the first event on
        assert wait_until(lambda: len(spooled_ids(log)) == 4, 20), log.read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: only what is on disk survives
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    made = spooled_ids(log)
    assert len(listener.ids()) == 1
    assert len(Spool(spool).peek()) == 3  # the three events made during the outage are on disk

    broker.start()
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,value\n")
    restarted = component(model_path, csv=empty, spool=spool, port=broker.port, log=log, speed=0)
    assert restarted.wait(timeout=60) == 0, log.read_text()[-2000:]
    try:
        assert listener.wait_for_ids(made, 20) == made
    finally:
        listener.close()
    assert Spool(spool).depth == 0
