"""Ack mode against a real mosquitto and a real ``python -m anomaly_detector`` process: a cloud-side
subscriber that stores every event but acks only some is sent the others again after the ack timeout, and
events awaiting their ack when the component is killed with ``kill -9`` are sent again by the next start
(docs/contracts.md §6c). Without the ack mode every row is deleted at PUBACK, so neither happens."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import greengrass_components
from greengrass_components.anomaly_detector.acks import ACK_SCHEMA
from greengrass_components.anomaly_detector.transport import MqttSettings, MqttTransport
from standins.processes import ManagedProcess

from .helpers import T0, series, start_subscribed, wait_until

ARTIFACT_PARENT = Path(greengrass_components.__file__).parent
THING = "gw-ack"
ACK_TIMEOUT_S = 10.0  # the smallest the component accepts


class AckingCloud:
    """Stores every event it receives (counting receipts per event id) and acks a receipt when the
    current policy says so, the way the cloud's ingest does once the event is stored."""

    def __init__(self, port: int) -> None:
        self.policy: Callable[[str, int], bool] = lambda _id, _receipt: True
        self.receipts: Counter[str] = Counter()
        self.first_seen: list[str] = []
        self.heartbeats: list[dict[str, object]] = []
        # Reentrant: a policy may look at what was seen (``seen``) while a receipt is being counted.
        self._lock = threading.RLock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"cloud-{port}",
            protocol=mqtt.MQTTv311,
        )
        start_subscribed(
            self._client, port, [("edge/+/anomalies", 1), ("edge/+/health", 1)], self._on_message
        )

    def _on_message(self, client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        if message.topic.endswith("/health"):
            with self._lock:
                self.heartbeats.append(body)
            return
        event_id = str(body["event_id"])
        with self._lock:
            if event_id not in self.receipts:
                self.first_seen.append(event_id)
            self.receipts[event_id] += 1
            ack = self.policy(event_id, self.receipts[event_id])
        if ack:
            ack_body = {"schema": ACK_SCHEMA, "event_ids": [event_id]}
            client.publish(f"edge/{body['thing_name']}/acks", json.dumps(ack_body), qos=1)

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.first_seen)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self.receipts)

    def last_heartbeat(self) -> dict[str, object]:
        with self._lock:
            return self.heartbeats[-1] if self.heartbeats else {}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def component(model: Path, *, spool: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "AWS_IOT_THING_NAME"}}
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                sys.executable, "-m", "anomaly_detector", "--thing-name", THING, "--model", str(model),
                "--source", "mqtt", "--sensor-topic", "sensors/#",
                "--transport", "mqtt", "--mqtt-port", str(port), "--spool", str(spool),
                "--ack-timeout-s", str(ACK_TIMEOUT_S), "--ack-topic", "edge/{thingName}/acks",
                "--health-interval-s", "0.3", "--drain-timeout-s", "10",
            ],
            cwd=ARTIFACT_PARENT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


class Sensor:
    """Publishes one stream's samples; ``send`` repeats a batch until the component's heartbeat shows it
    was taken (the component subscribes a moment after it starts; a repeat is refused as out of order)."""

    def __init__(self, port: int, cloud: AckingCloud) -> None:
        self._cloud = cloud
        self._next = 0
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def send(self, spikes: tuple[int, ...], n: int, log: Path) -> None:
        values = series(n=n, spike_at=None)
        for index in spikes:
            values[index] += 10.0
        start = self._next
        self._next += n
        batch = {
            "stream": "pump",
            "timestamps": [T0 + 60.0 * (start + i) for i in range(n)],
            "values": {"value": values},
        }

        def taken() -> bool:
            samples_in = self._cloud.last_heartbeat().get("samples_in", 0)
            return isinstance(samples_in, int) and samples_in >= self._next

        deadline = time.monotonic() + 20
        while not taken():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            self._client.publish("sensors/pump", json.dumps(batch), qos=1).wait_for_publish(5)
            wait_until(taken, 1.0)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def spool_rows(path: Path) -> tuple[int, int]:
    """(rows, rows awaiting an ack) as on disk; a reader beside the running component (WAL)."""
    db = sqlite3.connect(path, timeout=5)
    try:
        rows, awaiting = db.execute("SELECT COUNT(*), COUNT(sent_at) FROM outbox").fetchone()
    finally:
        db.close()
    return int(rows), int(awaiting)


def log_lines(log: Path, message: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == message]


def test_unacked_events_are_resent_and_awaiting_ones_survive_kill_9(
    tmp_path: Path, model_path: Path, broker: ManagedProcess
) -> None:
    cloud = AckingCloud(broker.port)
    sensor = Sensor(broker.port, cloud)
    spool, log = tmp_path / "spool.db", tmp_path / "component.log"
    proc = component(model_path, spool=spool, port=broker.port, log=log)
    restarted: subprocess.Popen[bytes] | None = None
    try:
        # 1. Acks for some events only: the first and third event are acked when first received, the
        # second and fourth only when they come again, which they must after the ack timeout.
        cloud.policy = lambda event_id, receipt: receipt > 1 or cloud.seen().index(event_id) % 2 == 0
        sensor.send(spikes=(20, 40, 60, 80), n=100, log=log)
        assert wait_until(lambda: len(cloud.seen()) == 4, 10), log.read_text()[-3000:]
        phase_one = cloud.seen()
        assert wait_until(lambda: spool_rows(spool) == (0, 0), 4 * ACK_TIMEOUT_S), log.read_text()[-3000:]
        assert {event_id: cloud.counts()[event_id] for event_id in phase_one} == {
            phase_one[0]: 1,
            phase_one[1]: 2,
            phase_one[2]: 1,
            phase_one[3]: 2,
        }
        assert wait_until(lambda: _acks(cloud).get("resent") == 2, 5)
        heartbeat = cloud.last_heartbeat()
        assert heartbeat["delivery"] == {
            "transport": "mqtt", "ack_timeout_s": ACK_TIMEOUT_S, "ack_subscription": "ok",
        }  # fmt: skip
        assert _acks(cloud) == {"received": 4, "unknown_ids": 0, "malformed": 0, "resent": 2, "gave_up": 0}

        # 2. The cloud stores but acks nothing; the component is killed with the events awaiting acks.
        cloud.policy = lambda _id, _receipt: False
        sensor.send(spikes=(20, 40, 60), n=80, log=log)
        assert wait_until(lambda: len(cloud.seen()) == 7, 10), log.read_text()[-3000:]
        assert wait_until(lambda: spool_rows(spool) == (3, 3), 5), log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert spool_rows(spool) == (3, 3)  # sent, confirmed by the broker, kept: no ack came

        # 3. The next start sends them again once their timeout has passed; this time they are acked.
        cloud.policy = lambda _id, _receipt: True
        restarted = component(model_path, spool=spool, port=broker.port, log=log)
        resent = wait_until(lambda: spool_rows(spool) == (0, 0), 10 + 2 * ACK_TIMEOUT_S)
        assert resent, log.read_text()[-3000:]
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        for process in (proc, restarted):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        sensor.close()
        cloud.close()

    everything = cloud.seen()
    assert len(everything) == 7
    phase_two = everything[4:]
    assert {event_id: cloud.counts()[event_id] for event_id in phase_two} == dict.fromkeys(phase_two, 2)
    (earlier,) = log_lines(log, "spooled events from an earlier run will be sent first")
    assert (earlier["spool_depth"], earlier["awaiting_ack"]) == (3, 3)
    assert spool_rows(spool) == (0, 0)


def _acks(cloud: AckingCloud) -> dict[str, object]:
    spool = cloud.last_heartbeat().get("spool", {})
    acks = spool.get("acks", {}) if isinstance(spool, dict) else {}
    return acks if isinstance(acks, dict) else {}


def test_the_mqtt_transport_subscribes_to_the_acks_again_after_a_reconnect(broker: ManagedProcess) -> None:
    settings = MqttSettings(port=broker.port, reconnect_min_s=1, reconnect_max_s=1)
    transport = MqttTransport(settings, require_connection=True)
    received: list[bytes] = []
    transport.subscribe(f"edge/{THING}/acks", received.append)
    cloud = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    cloud.reconnect_delay_set(1, 1)
    cloud.connect("127.0.0.1", broker.port)
    cloud.loop_start()

    def acked(body: bytes) -> bool:
        # The subscription is made a moment after (re)connecting: repeat the ack until it is heard.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cloud.publish(f"edge/{THING}/acks", body, qos=1)
            if wait_until(lambda: body in received, 0.3):
                return True
        return False

    try:
        assert acked(b"before")
        broker.stop()  # a clean session: the broker forgets the subscription with the connection
        assert wait_until(lambda: not transport.connected, 5)
        broker.start()
        assert wait_until(lambda: transport.connected, 15)
        assert acked(b"after")
    finally:
        cloud.disconnect()
        cloud.loop_stop()
        transport.close()
