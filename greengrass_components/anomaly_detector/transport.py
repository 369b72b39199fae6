"""The ``Transport`` port (device -> cloud publish, QoS 1) and its adapters: Greengrass IPC, MQTT, memory.

Each adapter can also deliver the messages of one cloud -> device topic to a handler (the acks of
docs/contracts.md §6c): ``MqttTransport.subscribe`` and ``InMemoryTransport.subscribe``, and over IPC
:class:`IpcIotCoreSubscription` (``SubscribeToIoTCore``).

paho and the Greengrass SDK are imported only by the adapter that uses them: each costs several MB of RSS
on a device that runs the other.
"""

from __future__ import annotations

import functools
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import TransportError
from .logs import get_logger

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = get_logger("transport")

# ``awsiot.greengrasscoreipc.model.QOS.AT_LEAST_ONCE``, without importing the SDK for one constant.
QOS_AT_LEAST_ONCE = "1"
# The nucleus refused an IoT Core operation of this component. The usual cause on a device: the recipe's
# accessControl names its topics with {iot:thingName}, which the nucleus expands only from 2.6.0 and with
# interpolateComponentConfiguration on aws.greengrass.Nucleus (default false; docs/deploy.md §3).
UNAUTHORIZED_HINT = (
    "the nucleus refused it (IPC accessControl): {iot:thingName} in the recipe's accessControl needs "
    "Greengrass nucleus >= 2.6.0 with interpolateComponentConfiguration: true on aws.greengrass.Nucleus "
    "(docs/deploy.md §3), and the resources must cover the topic"
)

# Receives the payload of one message of a subscribed topic, on the transport's own thread; must not raise.
MessageHandler = Callable[[bytes], None]
# A subscription as the heartbeat reports it (``delivery.ack_subscription``; ``off`` without ack mode).
SubscriptionState = Literal["ok", "refused", "closed", "off"]


class Transport(Protocol):
    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with at-least-once delivery; raise :class:`TransportError` when that is not achieved."""

    def close(self) -> None: ...


class IpcPublisher(Protocol):
    """The one method of ``GreengrassCoreIPCClientV2`` this adapter needs."""

    def publish_to_iot_core(self, *, topic_name: str, qos: str, payload: bytes) -> Any: ...


class IpcTransport:
    """Publishes to IoT Core through the nucleus (``PublishToIoTCore``).

    Success means the nucleus accepted (spooled) the message, not that IoT Core received it
    (aws-iot-device-sdk-python-v2#354). The IPC client is created once in main and passed in.
    """

    def __init__(self, ipc_client: IpcPublisher) -> None:
        self._ipc = ipc_client

    def publish(self, topic: str, payload: bytes) -> None:
        try:
            self._ipc.publish_to_iot_core(topic_name=topic, qos=QOS_AT_LEAST_ONCE, payload=payload)
        # The SDK raises its own error family plus awscrt/concurrent.futures errors; all mean "not sent".
        except Exception as exc:
            raise TransportError(f"PublishToIoTCore on {topic!r} failed: {_describe(exc)}") from exc

    def close(self) -> None:
        """The IPC client belongs to main, which closes it."""


class IpcIotCoreSubscriber(Protocol):
    """The one method of ``GreengrassCoreIPCClientV2`` :class:`IpcIotCoreSubscription` needs."""

    def subscribe_to_iot_core(
        self,
        *,
        topic_name: str,
        qos: str,
        on_stream_event: Callable[[Any], None],
        on_stream_error: Callable[[Exception], bool],
        on_stream_closed: Callable[[], None],
    ) -> Any: ...


class IpcIotCoreSubscription:
    """Messages of one IoT Core topic through the nucleus (``SubscribeToIoTCore``, QoS 1) to a handler.

    The recipe's access control must grant ``aws.greengrass#SubscribeToIoTCore`` on the topic; a refused
    subscription raises :class:`TransportError` at start, so a device does not run in ack mode deaf to
    its acks (every event would be sent again after every timeout and none ever deleted). A stream the
    nucleus closes later (a nucleus restart, say) is subscribed again from a background thread, after
    ``retry_initial_s`` doubling up to ``retry_max_s`` while attempts fail. ``state`` is what the
    heartbeat reports: ``ok``, ``closed`` (waiting to subscribe again) or ``refused`` (the last attempt
    failed).
    """

    def __init__(
        self,
        ipc_client: IpcIotCoreSubscriber,
        *,
        topic: str,
        on_message: MessageHandler,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self.topic = topic
        self._ipc = ipc_client
        self._on_message = on_message
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self.stream_errors = 0
        self.resubscribed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closes = 0  # streams closed so far: tells a close during a re-subscribe from none
        self._resubscriber: threading.Thread | None = None
        # Each subscribe attempt gets a number; only the close of the live one counts. The SDK also closes
        # the stream of a *refused* subscribe, late: that close must neither mark a working subscription
        # `closed` nor start a re-subscriber for a component that is exiting on the refusal.
        self._attempts = 0
        self._live_attempt: int | None = None
        self._operation = self._subscribe()
        self.state: SubscriptionState = "ok"

    def _subscribe(self) -> Any:
        with self._lock:
            self._attempts += 1
            attempt = self._attempts
        try:
            _response, operation = self._ipc.subscribe_to_iot_core(
                topic_name=self.topic,
                qos=QOS_AT_LEAST_ONCE,
                on_stream_event=self._on_event,
                on_stream_error=self._on_error,
                on_stream_closed=functools.partial(self._on_closed, attempt),
            )
        # The SDK raises its own error family (UnauthorizedError, ...) plus awscrt errors.
        except Exception as exc:
            raise TransportError(f"SubscribeToIoTCore on {self.topic!r} failed: {_describe(exc)}") from exc
        with self._lock:
            self._live_attempt = attempt
        return operation

    def _on_event(self, event: Any) -> None:
        # An IoTCoreMessage; an IPC callback that raises kills its stream, so the handler must not raise.
        message = getattr(event, "message", None)
        payload = getattr(message, "payload", None)
        if isinstance(payload, str):
            payload = payload.encode()
        self._on_message(payload if isinstance(payload, bytes) else b"")

    def _on_error(self, error: Exception) -> bool:
        self.stream_errors += 1
        log.error("IPC IoT Core subscription error", extra={"topic": self.topic, "error": str(error)})
        return False  # keep the subscription open

    def _on_closed(self, attempt: int) -> None:
        with self._lock:
            if self._stop.is_set() or attempt != self._live_attempt:
                return  # our own close, or the late close of a refused or replaced attempt
            self._live_attempt = None
            self.state = "closed"
            self._closes += 1
            if self._resubscriber is not None:
                return  # the running re-subscriber sees this close and tries again
            self._resubscriber = threading.Thread(
                target=self._resubscribe, name="ack-resubscribe", daemon=True
            )
            self._resubscriber.start()
        log.warning(
            "IPC IoT Core subscription closed; subscribing again",
            extra={"topic": self.topic, "retry_in_s": self._retry_initial_s},
        )

    def _resubscribe(self) -> None:
        delay = self._retry_initial_s
        while not self._stop.wait(delay):
            with self._lock:
                closes = self._closes
            try:
                operation = self._subscribe()
            except TransportError as exc:
                delay = min(delay * 2, self._retry_max_s)
                with self._lock:
                    self.state = "refused"
                log.error(  # noqa: TRY400 - expected, retried
                    "IPC IoT Core subscription refused; retrying",
                    extra={"topic": self.topic, "error": str(exc), "retry_in_s": delay},
                )
                continue
            with self._lock:
                if self._stop.is_set():
                    # close() ran while this subscribe was under way: do not leave a live subscription.
                    self._resubscriber = None
                    leaked = operation
                else:
                    leaked = None
            if leaked is not None:
                _close_quietly(leaked)
                return
            with self._lock:
                self._operation = operation
                if self._closes == closes:
                    self.state = "ok"
                    self.resubscribed += 1
                    self._resubscriber = None
                    log.info("IPC IoT Core subscription restored", extra={"topic": self.topic})
                    return
            delay = self._retry_initial_s  # closed again while subscribing: once more
        with self._lock:
            self._resubscriber = None

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            thread = self._resubscriber
        if thread is not None:
            thread.join(timeout=5)  # a subscribe it has under way still lands in self._operation
        with self._lock:
            operation = self._operation
        close = getattr(operation, "close", None)
        if close is not None:
            close()


def _describe(exc: Exception) -> str:
    """The error for a log line. The SDK's errors print as '' (their text is in ``message``); a refusal
    by the nucleus is named as such, with its likely cause."""
    name = type(exc).__name__
    text = str(exc) or str(getattr(exc, "message", "") or "")
    if name != "UnauthorizedError":  # by name: the SDK is imported only by main
        return text or name
    return f"{name}: {text} ({UNAUTHORIZED_HINT})" if text else f"{name} ({UNAUTHORIZED_HINT})"


def _close_quietly(operation: Any) -> None:
    close = getattr(operation, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # noqa: BLE001 - the SDK's errors share no base; closing is best effort
        log.debug("closing an IPC stream failed", extra={"error": str(exc)})


NUCLEUS_COMPONENT = "aws.greengrass.Nucleus"
DISK_SPOOL = "Disk"
MEMORY_SPOOL = "Memory"  # the nucleus's default (mqtt.spooler.storageType)


def nucleus_spool_storage(ipc_client: Any) -> str:
    """Where the nucleus keeps what ``PublishToIoTCore`` accepted: ``Disk``, ``Memory`` or ``unknown``.

    With the IPC transport the spool row is deleted once the nucleus accepts the event, so from then on
    the nucleus's own spool holds it: in memory by default (2.5 MB, oldest dropped when full, lost on a
    nucleus restart), on disk with ``aws.greengrass.DiskSpooler``. The device reports which in its
    heartbeat, so the fleet shows where delivery is weaker than the component's own spool.
    """
    try:
        response = ipc_client.get_configuration(
            component_name=NUCLEUS_COMPONENT, key_path=["mqtt", "spooler"]
        )
    except Exception as exc:  # noqa: BLE001 - the SDK's error family has no common base but Exception
        # No mqtt.spooler key at all: the nucleus runs its default, the in-memory spool.
        return MEMORY_SPOOL if type(exc).__name__ == "ResourceNotFoundError" else "unknown"
    value = getattr(response, "value", None)
    if value is None:
        return MEMORY_SPOOL
    if not isinstance(value, dict):
        return "unknown"
    storage = value.get("storageType", MEMORY_SPOOL)
    return str(storage) if str(storage) in (DISK_SPOOL, MEMORY_SPOOL) else "unknown"


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = field(default_factory=lambda: f"edgeml-{uuid.uuid4().hex[:12]}")
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 10.0
    # paho reconnects by itself after a drop, backing off between these bounds.
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    tls: TlsSettings | None = None


def new_paho_client(settings: MqttSettings) -> mqtt.Client:
    """A paho 2.x client (callback API v2, MQTT 3.1.1: every broker and IoT Core speak it)."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415 - see the module docstring
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=mqtt.MQTTv311,
    )
    if settings.tls is not None:
        try:
            client.tls_set(
                ca_certs=str(settings.tls.ca_file),
                certfile=str(settings.tls.cert_file) if settings.tls.cert_file else None,
                keyfile=str(settings.tls.key_file) if settings.tls.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: unreadable or mismatched files
            raise TransportError(f"MQTT TLS settings unusable: {exc}") from exc
    client.reconnect_delay_set(
        min_delay=max(1, round(settings.reconnect_min_s)), max_delay=max(1, round(settings.reconnect_max_s))
    )
    return client


def connect_and_wait(
    client: mqtt.Client,
    settings: MqttSettings,
    on_connected: Callable[[mqtt.Client], None] | None = None,
) -> None:
    """Connect, start the network thread, and block until the broker accepted us (or fail clearly).

    ``on_connected`` runs on every (re)connect, which is where subscriptions belong: a clean session
    forgets them when the connection drops.
    """
    connected = threading.Event()
    result: dict[str, str] = {}

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason_code: Any, _p: object) -> None:
        result["reason"] = str(reason_code)
        if not reason_code.is_failure:
            if on_connected is not None:
                on_connected(c)
            connected.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:
        raise TransportError(f"cannot connect to MQTT broker {settings.host}:{settings.port}: {exc}") from exc
    client.loop_start()
    if not connected.wait(settings.connect_timeout_s):
        client.loop_stop()
        reason = result.get("reason", "no CONNACK")
        raise TransportError(
            f"MQTT broker {settings.host}:{settings.port} did not accept the connection within "
            f"{settings.connect_timeout_s}s ({reason})"
        )


def connect_in_background(
    client: mqtt.Client,
    settings: MqttSettings,
    on_connected: Callable[[mqtt.Client], None] | None = None,
) -> bool:
    """Start connecting and keep retrying in paho's thread; True if connected within the first attempt.

    A broker that is down (or refuses us) when the component starts is not fatal: the first attempt's
    outcome is awaited (at most ``connect_timeout_s``), then paho retries with backoff for as long as the
    client lives, and ``on_connected`` runs on every successful (re)connect.
    """
    connected = threading.Event()
    attempted = threading.Event()
    result: dict[str, str] = {}

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason_code: Any, _p: object) -> None:
        result["reason"] = str(reason_code)
        attempted.set()
        if not reason_code.is_failure:
            if on_connected is not None:
                on_connected(c)
            connected.set()

    def on_connect_fail(_c: mqtt.Client, _u: object) -> None:
        result["reason"] = "connection failed"
        attempted.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason_code: Any, _p: object) -> None:
        # E.g. a TLS broker dropping a client without a certificate right after the handshake.
        result.setdefault("reason", f"disconnected: {reason_code}")
        attempted.set()

    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_disconnect = on_disconnect
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
    client.loop_start()
    attempted.wait(settings.connect_timeout_s)
    if connected.is_set():
        return True
    log.warning(
        "MQTT broker not reachable yet; retrying in the background",
        extra={"host": settings.host, "port": settings.port, "reason": result.get("reason", "no CONNACK")},
    )
    return False


class MqttTransport:
    """Publishes with QoS 1 to an MQTT broker (local mosquitto, or IoT Core with TLS client certs).

    ``publish`` waits for the PUBACK, so a return means the broker has the message. While the connection
    is down it fails at once instead of queueing inside paho: the durable spool is the only queue, so an
    outage does not pile up stale copies in memory.

    A broker that is down at start is not fatal (``require_connection=False``, the default): the
    component starts in spool-only mode, paho keeps reconnecting, and ``on_connected`` (the forwarder's
    ``retry_now``) runs on each (re)connect so the spool drains at once instead of after a backoff.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client: mqtt.Client | None = None,
        *,
        require_connection: bool = False,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._client = client if client is not None else new_paho_client(settings)
        self.on_connected = on_connected
        self._subscriptions: dict[str, MessageHandler] = {}
        # Per topic, the broker's answer to the last SUBSCRIBE of this connection; mid -> topic awaiting it.
        self._subscription_states: dict[str, SubscriptionState] = {}
        self._suback_pending: dict[int, str] = {}
        self._subscriptions_lock = threading.Lock()
        self._client.on_subscribe = self._subscribed
        if require_connection:
            connect_and_wait(self._client, settings, on_connected=self._connected)
        else:
            connect_in_background(self._client, settings, on_connected=self._connected)

    def _connected(self, client: mqtt.Client) -> None:
        log.info("MQTT connected", extra={"host": self._settings.host, "port": self._settings.port})
        # A clean session forgets subscriptions with the connection: subscribe again on every connect.
        with self._subscriptions_lock:
            topics = list(self._subscriptions)
        for topic in topics:
            self._subscribe_now(client, topic)
        if self.on_connected is not None:
            self.on_connected()

    def subscribe(self, topic: str, on_message: MessageHandler) -> None:
        """Deliver the payloads of ``topic`` (QoS 1) to ``on_message`` on paho's network thread, from now
        and after every reconnect. Messages sent while the connection is down are not delivered (clean
        session); the ack mode's resend covers that."""

        def deliver(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            on_message(bytes(message.payload))

        with self._subscriptions_lock:
            self._subscriptions[topic] = on_message
        self._client.message_callback_add(topic, deliver)
        if self._client.is_connected():
            self._subscribe_now(self._client, topic)  # a connect in between subscribes too: harmless twice

    def _subscribe_now(self, client: mqtt.Client, topic: str) -> None:
        # Under the lock: the SUBACK (on paho's thread) must find its mid recorded.
        with self._subscriptions_lock:
            self._subscription_states[topic] = "closed"  # until the broker answers
            _result, mid = client.subscribe(topic, qos=1)
            if mid is not None:
                self._suback_pending[mid] = topic

    def _subscribed(self, _c: mqtt.Client, _u: object, mid: int, reason_codes: Any, _p: object) -> None:
        refused = [str(code) for code in reason_codes if getattr(code, "is_failure", False)]
        with self._subscriptions_lock:
            topic = self._suback_pending.pop(mid, None)
            if topic is not None:
                self._subscription_states[topic] = "refused" if refused else "ok"
        if refused:
            # Tried again on the next reconnect; the heartbeat says "refused" until then.
            log.error(
                "MQTT subscription refused by the broker",
                extra={"mid": mid, "topic": topic, "reason_codes": refused},
            )

    def subscription_state(self, topic: str) -> SubscriptionState:
        """``ok`` once the broker granted the subscription on this connection, ``refused`` if it refused
        it, ``closed`` while disconnected or awaiting the answer."""
        if not self._client.is_connected():
            return "closed"
        with self._subscriptions_lock:
            return self._subscription_states.get(topic, "closed")

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def publish(self, topic: str, payload: bytes) -> None:
        if not self._client.is_connected():
            raise TransportError(f"MQTT publish to {topic!r} failed: not connected to the broker")
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=self._settings.publish_timeout_s)
        except (ValueError, RuntimeError) as exc:
            raise TransportError(f"MQTT publish to {topic!r} failed: {exc}") from exc
        if not info.is_published():
            raise TransportError(
                f"MQTT publish to {topic!r} not acknowledged within {self._settings.publish_timeout_s}s"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass(frozen=True)
class Published:
    topic: str
    payload: bytes


class InMemoryTransport:
    """Records what would have been published (tests and dry runs)."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.subscriptions: dict[str, MessageHandler] = {}
        self.closed = False

    def publish(self, topic: str, payload: bytes) -> None:
        self.published.append(Published(topic, payload))

    def subscribe(self, topic: str, on_message: MessageHandler) -> None:
        self.subscriptions[topic] = on_message

    def subscription_state(self, topic: str) -> SubscriptionState:
        return "ok" if topic in self.subscriptions else "closed"

    def deliver(self, topic: str, payload: bytes) -> None:
        """A message from the cloud on ``topic`` (tests: an ack), handed to its subscriber if any."""
        handler = self.subscriptions.get(topic)
        if handler is not None:
            handler(payload)

    def close(self) -> None:
        self.closed = True
