"""The cloud side of the demo's MQTT link: what IoT Core would receive from the devices."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class Received:
    topic: str
    payload: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise TypeError(f"message on {self.topic} is not a JSON object")
        return value


@dataclass
class CloudListener:
    """Subscribes to the devices' anomaly and health topics on the local broker and keeps every message."""

    host: str
    port: int
    topic_filters: tuple[str, ...] = ("edge/+/anomalies", "edge/+/health")
    messages: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _subscribed: threading.Event = field(default_factory=threading.Event, init=False)
    _client: mqtt.Client | None = field(default=None, init=False)

    def start(self, timeout_s: float = 10.0) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-cloud-listener")
        client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe([(t, 1) for t in self.topic_filters])
        client.on_subscribe = lambda *_args: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(self.host, self.port)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"no SUBACK from the broker at {self.host}:{self.port} in {timeout_s} s")

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(topic=msg.topic, payload=bytes(msg.payload)))

    def wait_until(self, condition: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self.snapshot()):
                return True
            time.sleep(0.05)
        return False

    def snapshot(self, suffix: str | None = None) -> list[Received]:
        """Every message so far, or those whose topic ends with ``/<suffix>`` (anomalies, health)."""
        with self._lock:
            return [m for m in self.messages if suffix is None or m.topic.endswith(f"/{suffix}")]

    def latest_health(self) -> dict[str, dict[str, Any]]:
        """The newest heartbeat of each thing."""
        return {m.topic.split("/")[1]: m.json() for m in self.snapshot("health")}

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None
