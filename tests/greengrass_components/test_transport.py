from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from greengrass_components.anomaly_detector.errors import TransportError
from greengrass_components.anomaly_detector.transport import (
    IpcTransport,
    MqttSettings,
    MqttTransport,
    TlsSettings,
)

from .conftest import free_port


class FakeIpc:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def publish_to_iot_core(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error


def test_ipc_transport_publishes_qos1_to_iot_core() -> None:
    ipc = FakeIpc()
    IpcTransport(ipc).publish("edge/gw-01/anomalies", b'{"a":1}')
    # QOS.AT_LEAST_ONCE is the string '1' in awsiot.greengrasscoreipc.model
    assert ipc.calls == [{"topic_name": "edge/gw-01/anomalies", "qos": "1", "payload": b'{"a":1}'}]


def test_ipc_transport_wraps_sdk_errors() -> None:
    transport = IpcTransport(FakeIpc(error=ConnectionError("socket closed")))
    with pytest.raises(TransportError, match="PublishToIoTCore on 'edge/x/anomalies' failed: socket closed"):
        transport.publish("edge/x/anomalies", b"{}")


def subscriber(port: int, topic: str) -> tuple[mqtt.Client, queue.Queue[tuple[str, bytes, int]]]:
    received: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
    subscribed = queue.Queue[bool]()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: received.put((m.topic, bytes(m.payload), m.qos))
    client.on_subscribe = lambda *_args: subscribed.put(True)
    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.get(timeout=5)
    return client, received


def test_mqtt_transport_delivers_to_a_real_broker(mosquitto: int) -> None:
    sub, received = subscriber(mosquitto, "edge/+/anomalies")
    transport = MqttTransport(MqttSettings(port=mosquitto))
    try:
        transport.publish("edge/gw-01/anomalies", b'{"event_id":"x"}')
        assert received.get(timeout=5) == ("edge/gw-01/anomalies", b'{"event_id":"x"}', 1)
    finally:
        transport.close()
        sub.disconnect()
        sub.loop_stop()


def test_mqtt_transport_that_requires_the_broker_fails_clearly_when_it_is_down() -> None:
    port = free_port()  # nothing listens here
    with pytest.raises(TransportError, match=f"cannot connect to MQTT broker 127.0.0.1:{port}"):
        MqttTransport(MqttSettings(port=port, connect_timeout_s=1), require_connection=True)


def test_mqtt_transport_starts_without_a_broker_and_refuses_publishes_until_connected() -> None:
    port = free_port()  # nothing listens here
    transport = MqttTransport(MqttSettings(port=port, connect_timeout_s=1))
    try:
        assert transport.connected is False
        with pytest.raises(TransportError, match="failed: not connected to the broker"):
            transport.publish("edge/gw/anomalies", b"{}")
    finally:
        transport.close()


def test_unreadable_tls_files_are_a_transport_error(tmp_path: Path) -> None:
    settings = MqttSettings(tls=TlsSettings(ca_file=tmp_path / "missing-ca.pem"))
    with pytest.raises(TransportError, match="MQTT TLS settings unusable"):
        MqttTransport(settings)


def test_mqtt_publish_after_disconnect_raises(mosquitto: int) -> None:
    transport = MqttTransport(MqttSettings(port=mosquitto, publish_timeout_s=1))
    transport.close()
    with pytest.raises(TransportError, match="MQTT publish to 'edge/gw/anomalies'"):
        transport.publish("edge/gw/anomalies", b"{}")
