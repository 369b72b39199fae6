"""The cloud side of the demo's MQTT link: what IoT Core would receive from the devices.

It also stands in for the ingest Lambda's delivery acks (docs/contracts.md §4): every anomaly event it
receives is acknowledged on ``edge/<thing>/acks`` with the message the Lambda builds
(``lambdas.ingest.acks``), so devices in ack mode delete it from their spool as they would in AWS.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lambdas.ingest.acks import ACK_QOS, ack_messages

LOG = logging.getLogger("demo.cloud")


@dataclass
class Received:
    topic: str
    payload: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise TypeError(f"message on {self.topic} is not a JSON object")
        return value


@dataclass(frozen=True)
class _Stored:
    thing_name: str
    event_id: str


def _storable(received: Received) -> _Stored | None:
    """The event the ingest would store and ack, or None for one it would refuse (and not ack)."""
    thing = received.topic.split("/")[1]
    try:
        event = received.json()
    except (ValueError, TypeError):
        return None
    event_id = event.get("event_id")
    # The ingest refuses an event that names another device than the one that published it.
    if not isinstance(event_id, str) or event.get("thing_name") != thing:
        return None
    return _Stored(thing_name=thing, event_id=event_id)


@dataclass
class CloudListener:
    """Subscribes to the devices' anomaly and health topics on the local broker and keeps every message;
    acks every anomaly event as the ingest does once it is stored (``ack_events``)."""

    host: str
    port: int
    topic_filters: tuple[str, ...] = ("edge/+/anomalies", "edge/+/health")
    ack_events: bool = True
    messages: list[Received] = field(default_factory=list)
    # Event ids acknowledged so far, in the order the acks were published.
    acked: list[str] = field(default_factory=list)
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

    def _on_message(self, client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        received = Received(topic=msg.topic, payload=bytes(msg.payload))
        with self._lock:
            self.messages.append(received)
        if self.ack_events and received.topic.endswith("/anomalies"):
            self._ack(client, received)

    def _ack(self, client: mqtt.Client, received: Received) -> None:
        stored = _storable(received)
        if stored is None:
            LOG.warning("anomaly event not acked (the ingest would refuse it): %s", received.topic)
            return
        for message in ack_messages([stored]):
            # Queued by paho's network loop (this callback runs on it); QoS 1, as IoT Core delivers acks.
            client.publish(message.topic, message.payload, qos=ACK_QOS)
            with self._lock:
                self.acked.extend(message.event_ids)

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
