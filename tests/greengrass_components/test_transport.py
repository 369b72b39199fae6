from __future__ import annotations

import queue
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from awsiot.greengrasscoreipc.model import ServiceError, UnauthorizedError
from paho.mqtt.enums import CallbackAPIVersion

from greengrass_components.anomaly_detector.errors import TransportError
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import (
    UNAUTHORIZED_HINT,
    IpcIotCoreSubscription,
    IpcTransport,
    MqttSettings,
    MqttTransport,
    TlsSettings,
)
from tests.greengrass_components.helpers import wait_until

from .conftest import free_port
from .test_spool_write_failures import captured_logs


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


class FakeIotCoreIpc:
    """``SubscribeToIoTCore`` of the nucleus: records each call; refuses them while ``refusing``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refusing = False
        self.closed: list[int] = []  # which call's stream was closed by the component

    def subscribe_to_iot_core(self, **kwargs: Any) -> tuple[object, object]:
        self.calls.append(kwargs)
        if self.refusing:
            raise PermissionError("UnauthorizedError: not authorized")
        call = len(self.calls)
        return object(), SimpleNamespace(close=lambda: self.closed.append(call))

    def nucleus_closes_the_stream(self) -> None:
        self.calls[-1]["on_stream_closed"]()

    def message(self, payload: bytes) -> None:
        self.calls[-1]["on_stream_event"](SimpleNamespace(message=SimpleNamespace(payload=payload)))


def test_an_ipc_subscription_the_nucleus_closes_is_made_again() -> None:
    ipc, received = FakeIotCoreIpc(), list[bytes]()
    subscription = IpcIotCoreSubscription(ipc, topic="edge/gw/acks", on_message=received.append)
    ipc.nucleus_closes_the_stream()  # a nucleus restart, say: no ack would be heard any more
    assert wait_until(lambda: len(ipc.calls) == 2), "not subscribed again"
    assert ipc.calls[1]["topic_name"] == "edge/gw/acks"
    assert wait_until(lambda: subscription.state == "ok")
    ipc.message(b"ack")
    assert received == [b"ack"]

    subscription.close()
    assert ipc.closed == [2]  # the live stream, not the one the nucleus closed
    ipc.nucleus_closes_the_stream()  # the close we asked for: not subscribed again
    time.sleep(0.05)
    assert len(ipc.calls) == 2


def test_a_refused_resubscription_is_retried_with_capped_backoff_and_reported() -> None:
    ipc = FakeIotCoreIpc()
    subscription = IpcIotCoreSubscription(
        ipc, topic="edge/gw/acks", on_message=lambda _p: None, retry_initial_s=0.01, retry_max_s=0.03
    )

    def state() -> str:
        return subscription.state

    assert state() == "ok"
    ipc.refusing = True  # the access control was changed under the running component, say
    with captured_logs() as records:
        ipc.nucleus_closes_the_stream()
        assert wait_until(lambda: state() == "refused")
        assert wait_until(lambda: len(ipc.calls) >= 5)
        ipc.refusing = False
        assert wait_until(lambda: state() == "ok")
    refused = [r for r in records if r.getMessage().startswith("IPC IoT Core subscription refused")]
    assert [getattr(r, "retry_in_s", None) for r in refused][:3] == [0.02, 0.03, 0.03]
    assert len(ipc.calls) == len(refused) + 2  # the first, the refused ones, the one that held
    subscription.close()


class FakePaho:
    """The part of a paho client MqttTransport uses; the test plays the broker's SUBACKs and drops."""

    def __init__(self) -> None:
        self.on_connect: Any = None
        self.on_subscribe: Any = None
        self.connected = False
        self.subscribed: list[tuple[str, int]] = []  # (topic, mid)

    def connect(self, *_args: object, **_kwargs: object) -> None:
        return None

    def loop_start(self) -> None:
        self.reconnect()

    def reconnect(self) -> None:
        self.connected = True
        self.on_connect(self, None, None, SimpleNamespace(is_failure=False), None)

    def is_connected(self) -> bool:
        return self.connected

    def subscribe(self, topic: str, qos: int) -> tuple[int, int]:
        assert qos == 1
        self.subscribed.append((topic, len(self.subscribed) + 1))
        return 0, len(self.subscribed)

    def suback(self, *, refused: bool) -> None:
        _topic, mid = self.subscribed[-1]
        self.on_subscribe(self, None, mid, [SimpleNamespace(is_failure=refused)], None)

    def message_callback_add(self, *_args: object) -> None:
        return None

    def disconnect(self) -> None:
        self.connected = False

    def loop_stop(self) -> None:
        return None


def test_the_mqtt_ack_subscription_state_follows_subacks_and_reconnects() -> None:
    paho = FakePaho()
    transport = MqttTransport(MqttSettings(), client=paho, require_connection=True)  # type: ignore[arg-type]
    transport.subscribe("edge/gw/acks", lambda _p: None)
    assert transport.subscription_state("edge/gw/acks") == "closed"  # no SUBACK yet
    with captured_logs() as records:
        paho.suback(refused=True)  # IoT Core refuses a topic the device policy does not allow
    assert transport.subscription_state("edge/gw/acks") == "refused"
    assert [r.getMessage() for r in records] == ["MQTT subscription refused by the broker"]

    paho.disconnect()
    assert transport.subscription_state("edge/gw/acks") == "closed"
    paho.reconnect()  # subscribed again on every reconnect
    assert [topic for topic, _mid in paho.subscribed] == ["edge/gw/acks", "edge/gw/acks"]
    paho.suback(refused=False)
    assert transport.subscription_state("edge/gw/acks") == "ok"


# --- a refusal by the nucleus names its likely cause -------------------------------------------------


class RefusingIpc:
    """A nucleus whose IPC authorization refuses this component's IoT Core operations, as the SDK reports
    it: ``UnauthorizedError``, whose ``str()`` is empty (the text is in ``message``)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def publish_to_iot_core(self, **_kwargs: Any) -> None:
        raise self.error

    def subscribe_to_iot_core(self, **_kwargs: Any) -> None:
        raise self.error


def _unauthorized(operation: str, topic: str) -> Exception:
    error: Exception = UnauthorizedError(
        message="Principal com.edgeml.AnomalyDetector is not authorized to perform "
        f"aws.greengrass.ipc.mqttproxy:aws.greengrass#{operation} on resource {topic}"
    )
    return error


def test_a_refused_publish_names_the_access_control_and_interpolation_as_the_likely_cause() -> None:
    error = _unauthorized("PublishToIoTCore", "edge/gw-01/anomalies")
    assert str(error) == ""  # what the log line showed before: nothing
    with pytest.raises(TransportError) as refused:
        IpcTransport(RefusingIpc(error)).publish("edge/gw-01/anomalies", b"{}")
    message = str(refused.value)
    assert message.startswith(
        "PublishToIoTCore on 'edge/gw-01/anomalies' failed: UnauthorizedError: Principal "
        "com.edgeml.AnomalyDetector is not authorized"
    )
    assert message.endswith(f"({UNAUTHORIZED_HINT})")
    assert "interpolateComponentConfiguration: true on aws.greengrass.Nucleus" in UNAUTHORIZED_HINT
    assert "nucleus >= 2.6.0" in UNAUTHORIZED_HINT


def test_a_refused_subscription_names_the_likely_cause_too() -> None:
    error = _unauthorized("SubscribeToIoTCore", "edge/gw-01/acks")
    with pytest.raises(
        TransportError, match=r"^SubscribeToIoTCore on 'edge/gw-01/acks' failed: Unauthorized"
    ):
        IpcIotCoreSubscription(RefusingIpc(error), topic="edge/gw-01/acks", on_message=lambda _p: None)
    with pytest.raises(TransportError) as refused:
        IpcIotCoreSubscription(RefusingIpc(error), topic="edge/gw-01/acks", on_message=lambda _p: None)
    assert "interpolateComponentConfiguration" in str(refused.value)


def test_other_ipc_errors_get_their_type_and_no_authorization_hint() -> None:
    with pytest.raises(TransportError) as failed:
        IpcTransport(RefusingIpc(ServiceError(message="nucleus busy"))).publish("edge/gw/health", b"{}")
    assert str(failed.value) == "PublishToIoTCore on 'edge/gw/health' failed: nucleus busy"
    with pytest.raises(TransportError) as failed:
        IpcTransport(RefusingIpc(TimeoutError())).publish("edge/gw/health", b"{}")
    assert str(failed.value) == "PublishToIoTCore on 'edge/gw/health' failed: TimeoutError"


def test_the_delivery_failure_log_line_carries_the_hint() -> None:
    spool = Spool(":memory:")
    spool.put(event_id="e0", stream="s", topic="edge/gw-01/anomalies", payload=b"{}", created_at=0.0)
    transport = IpcTransport(RefusingIpc(_unauthorized("PublishToIoTCore", "edge/gw-01/anomalies")))
    with captured_logs() as records:
        assert not Forwarder(spool, transport).send_pending()
    (failing,) = [r for r in records if r.getMessage() == "delivery failing, events stay in the spool"]
    assert "interpolateComponentConfiguration" in failing.__dict__["error"]
    assert spool.depth == 1  # kept for when the nucleus is configured
