"""Ack mode end to end in one process (docs/contracts.md §6c): the forwarder keeps sent rows until the
cloud acks them, does not wait for the acks to send the next row, resends a row whose ack is overdue,
and drains only unsent rows on stop; the app reports it all in the heartbeat; and the device wiring
subscribes to the acks over IPC (``SubscribeToIoTCore``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from greengrass_components.anomaly_detector.acks import ACK_SCHEMA, AckCounts, AckHandler
from greengrass_components.anomaly_detector.app import build_runtime
from greengrass_components.anomaly_detector.config import parse_config
from greengrass_components.anomaly_detector.errors import TransportError
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .helpers import ListSource, samples, series, wait_until
from .test_app import make_app
from .test_runtime import FakeGreengrassIpc
from .test_spool_write_failures import captured_logs

ACK_TOPIC = "edge/gw-01/acks"
ANOMALY_TOPIC = "edge/gw-01/anomalies"
TIMEOUT = 30.0
NOW = 1_800_000_000.0


class AckingTransport(InMemoryTransport):
    """The cloud in memory: acks an event on receipt when ``ack_on`` says so, before ``publish`` even
    returns (a fast cloud: the ack can beat the forwarder's own bookkeeping); the test acks others later."""

    def __init__(self, ack_on: Callable[[str, int], bool] = lambda _id, _receipt: False) -> None:
        super().__init__()
        self.ack_on = ack_on
        self.receipts: Counter[str] = Counter()

    def publish(self, topic: str, payload: bytes) -> None:
        super().publish(topic, payload)
        if topic == ANOMALY_TOPIC:
            event_id = json.loads(payload)["event_id"]
            self.receipts[event_id] += 1
            if self.ack_on(event_id, self.receipts[event_id]):
                self.ack(event_id)

    def ack(self, *event_ids: str) -> None:
        self.deliver(ACK_TOPIC, json.dumps({"schema": ACK_SCHEMA, "event_ids": list(event_ids)}).encode())

    def sent_ids(self) -> list[str]:
        return [json.loads(p.payload)["event_id"] for p in self.published if p.topic == ANOMALY_TOPIC]


class WallClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ack_mode(
    spool: Spool, transport: AckingTransport, clock: WallClock, **kwargs: Any
) -> tuple[Forwarder, AckHandler]:
    acks = AckHandler(spool, wall_clock=clock)
    transport.subscribe(ACK_TOPIC, acks.handle)
    kwargs.setdefault("jitter", lambda: 0.0)  # due exactly ack_timeout_s * 2**resends after a send
    forwarder = Forwarder(
        spool, transport, ack_timeout_s=TIMEOUT, wall_clock=clock, last_ack_at=acks.last_received_at, **kwargs
    )
    return forwarder, acks


def put(spool: Spool, *event_ids: str) -> None:
    for event_id in event_ids:
        payload = json.dumps({"event_id": event_id}).encode()
        spool.put(event_id=event_id, stream="s", topic=ANOMALY_TOPIC, payload=payload, created_at=0.0)


def test_rows_are_kept_until_acked_and_the_unacked_are_resent_after_the_timeout() -> None:
    spool, transport, clock = Spool(":memory:"), AckingTransport(), WallClock()
    forwarder, acks = ack_mode(spool, transport, clock)
    put(spool, "e0", "e1", "e2", "e3", "e4")

    assert forwarder.send_pending()
    # Every row went out without waiting for any ack, and every row is still in the spool.
    assert transport.sent_ids() == ["e0", "e1", "e2", "e3", "e4"]
    assert (spool.depth, spool.awaiting_ack) == (5, 5)

    transport.ack("e1", "e3")
    assert [e.event_id for e in spool.peek()] == ["e0", "e2", "e4"]

    clock.now += TIMEOUT - 0.5
    assert forwarder.send_pending()
    assert len(transport.published) == 5  # not overdue yet
    clock.now += 0.5
    put(spool, "e5")
    assert forwarder.send_pending()
    # The never-sent row goes first, then the overdue rows in seq order.
    assert transport.sent_ids()[5:] == ["e5", "e0", "e2", "e4"]
    assert (forwarder.sent, forwarder.resent) == (9, 3)

    transport.ack("e0", "e2", "e4", "e5", "e1")  # e1's second ack: its row is gone
    assert (spool.depth, spool.awaiting_ack) == (0, 0)
    assert acks.counts() == AckCounts(received=2, unknown_ids=1, malformed=0)  # two ack messages


def test_with_acks_off_a_confirmed_row_is_deleted_as_before() -> None:
    spool, transport = Spool(":memory:"), AckingTransport()
    forwarder = Forwarder(spool, transport)
    put(spool, "e0", "e1")
    assert forwarder.send_pending()
    assert (spool.depth, spool.awaiting_ack, forwarder.resent) == (0, 0, 0)


def test_the_forwarder_thread_resends_on_its_own_and_stops_when_acked() -> None:
    spool = Spool(":memory:")
    # The cloud stores every event but its first ack of e1 is lost; the resend is acked.
    transport = AckingTransport(ack_on=lambda event_id, receipt: event_id != "e1" or receipt > 1)
    clock = WallClock()
    forwarder, _acks = ack_mode(spool, transport, clock, idle_poll_s=0.01)
    put(spool, "e0", "e1", "e2")
    forwarder.start()
    try:
        forwarder.notify()
        assert wait_until(lambda: len(transport.published) == 3 and spool.depth == 1)
        clock.now += TIMEOUT
        assert wait_until(lambda: spool.depth == 0)
    finally:
        forwarder.close()
    assert transport.receipts == {"e0": 1, "e1": 2, "e2": 1}


def test_drain_waits_for_unsent_and_overdue_rows_only() -> None:
    spool, transport, clock = Spool(":memory:"), AckingTransport(), WallClock()
    forwarder, _acks = ack_mode(spool, transport, clock)
    put(spool, "e0", "e1")
    assert forwarder.send_pending()
    forwarder.start()
    try:
        started = time.monotonic()
        assert forwarder.drain(5.0)  # both await an ack: nothing to wait for
        assert time.monotonic() - started < 1.0
        assert spool.depth == 2

        clock.now += TIMEOUT  # now both are overdue: a stop sends them again first
        put(spool, "e2")
        assert forwarder.unsent() == 3
        assert forwarder.drain(5.0)
        assert transport.sent_ids() == ["e0", "e1", "e2", "e0", "e1"]
        assert (spool.depth, spool.awaiting_ack) == (3, 3)
    finally:
        forwarder.close()


def test_the_app_keeps_unacked_events_and_a_restart_resends_them(tmp_path: Path, model_path: Path) -> None:
    values = series(n=60, spike_at=None)
    for index in (15, 30, 45):
        values[index] += 10.0
    spool = Spool(tmp_path / "spool.db")
    first: list[str] = []

    def ack_first_event_only(event_id: str, _receipt: int) -> bool:
        first.append(event_id)
        return len(first) == 1

    transport, clock = AckingTransport(ack_on=ack_first_event_only), WallClock()
    forwarder, acks = ack_mode(spool, transport, clock, retry_initial_s=0.01)
    app = make_app(
        load_model(model_path),
        ListSource(samples(values)),
        transport,
        spool=spool,
        forwarder=forwarder,
        acks=acks,
        delivery={"transport": "memory", "ack_timeout_s": TIMEOUT},
    )
    with captured_logs() as records:
        stats = app.run()

    assert stats.anomalies_forwarded == 3
    assert transport.sent_ids() == first
    assert [e.event_id for e in spool.peek()] == first[1:]  # the unacked two stay for the next start
    (stopping,) = [r for r in records if "not yet acknowledged" in r.getMessage()]
    assert stopping.awaiting_ack == 2  # type: ignore[attr-defined]
    health = app.health(0.0)
    assert health["spool"]["depth"] == 2
    assert health["spool"]["awaiting_ack"] == 2
    assert health["spool"]["acks"] == {
        "received": 1, "unknown_ids": 0, "malformed": 0, "resent": 0, "gave_up": 0,
    }  # fmt: skip
    # make_app is not given the subscription's state: reported as without ack mode.
    assert health["delivery"] == {"transport": "memory", "ack_timeout_s": TIMEOUT, "ack_subscription": "off"}
    spool.close()

    # The next start, once the timeout has passed since the rows were sent: sent again, then acked.
    spool = Spool(tmp_path / "spool.db")
    assert (spool.depth, spool.awaiting_ack) == (2, 2)
    transport = AckingTransport(ack_on=lambda _id, _receipt: True)
    forwarder, acks = ack_mode(spool, transport, WallClock(NOW + TIMEOUT), retry_initial_s=0.01)
    restarted = make_app(
        load_model(model_path), ListSource([]), transport, spool=spool, forwarder=forwarder, acks=acks
    )
    stats = restarted.run()
    assert transport.sent_ids() == first[1:]
    assert (spool.depth, spool.awaiting_ack) == (0, 0)
    assert stats.anomalies_forwarded == 0  # resends: counted once, where they were first sent
    assert restarted.health(0.0)["spool"]["acks"] == {
        "received": 2,
        "unknown_ids": 0,
        "malformed": 0,
        "resent": 2,
        "gave_up": 0,
    }


def test_a_restart_before_the_timeout_leaves_awaiting_rows_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    put(spool, "e0")
    first = Forwarder(spool, AckingTransport(), ack_timeout_s=TIMEOUT, wall_clock=WallClock())
    assert first.send_pending()
    spool.close()

    spool = Spool(tmp_path / "spool.db")
    transport = AckingTransport()
    forwarder = Forwarder(spool, transport, ack_timeout_s=TIMEOUT, wall_clock=WallClock(NOW + TIMEOUT - 1))
    assert forwarder.send_pending()
    assert transport.published == []  # its ack may still come: not sent twice within the timeout
    assert forwarder.drain(0.1)


def test_the_heartbeat_reports_ack_mode_off_by_default(tmp_path: Path, model_path: Path) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("timestamp,value\n")
    base = ["--model", str(model_path), "--source", "file", "--file", str(csv), "--stream", "s",
            "--transport", "memory", "--thing-name", "gw-01"]  # fmt: skip
    with build_runtime(parse_config(base)) as runtime:
        health = runtime.app.health(0.0)
    assert health["delivery"] == {"transport": "memory", "ack_timeout_s": 0.0, "ack_subscription": "off"}
    assert health["spool"]["awaiting_ack"] == 0
    assert health["spool"]["acks"] == {
        "received": 0, "unknown_ids": 0, "malformed": 0, "resent": 0, "gave_up": 0,
    }  # fmt: skip
    with build_runtime(parse_config([*base, "--ack-timeout-s", "12.5"])) as runtime:
        assert runtime.app.health(0.0)["delivery"] == {
            "transport": "memory", "ack_timeout_s": 12.5, "ack_subscription": "ok",
        }  # fmt: skip


class AckingGreengrassIpc(FakeGreengrassIpc):
    """The nucleus, with ``SubscribeToIoTCore``; ``refuse`` makes it answer as a missing access control."""

    def __init__(self, model_config: dict[str, Any], *, refuse: bool = False) -> None:
        super().__init__(model_config)
        self.iot_core_kwargs: dict[str, Any] = {}
        self.refuse = refuse
        self.subscription_closed = False
        self.iot_core_subscribes = 0

    def subscribe_to_iot_core(self, **kwargs: Any) -> tuple[object, object]:
        if self.refuse:
            raise PermissionError("UnauthorizedError: not authorized to subscribe to edge/gw-dev/acks")
        self.iot_core_kwargs = kwargs
        self.iot_core_subscribes += 1

        def close() -> None:
            self.subscription_closed = True

        return object(), SimpleNamespace(close=close)

    def cloud_says(self, payload: bytes | str) -> None:
        """What the nucleus hands the component for one message on the subscribed topic."""
        message = SimpleNamespace(topic_name="edge/gw-dev/acks", payload=payload)
        self.iot_core_kwargs["on_stream_event"](SimpleNamespace(message=message))


def device(tmp_path: Path, model_path: Path, ipc_factory: Callable[[], AckingGreengrassIpc]) -> Any:
    artifact = tmp_path / "packages" / "artifacts" / "com.edgeml.AnomalyModel" / "1.0.0" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    shutil.copy(model_path, artifact)
    # The recipe's Run line with its defaults interpolated as the nucleus does (numbers as floats).
    config = parse_config(
        ["--kernel-root", str(tmp_path), "--source", "ipc", "--transport", "ipc",
         "--sensor-topic", "sensors/#", "--anomaly-topic", "edge/{iot:thingName}/anomalies",
         "--ack-timeout-s", "30.0", "--ack-topic", "edge/{iot:thingName}/acks",
         "--batch-size", "4.0", "--health-interval-s", "0.0", "--spool", str(tmp_path / "spool.db")],
        env={"AWS_IOT_THING_NAME": "gw-dev"},
    )  # fmt: skip
    return build_runtime(config, ipc_factory=ipc_factory)


def model_config(tmp_path: Path, model_path: Path) -> dict[str, Any]:
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    return {"component": "com.edgeml.AnomalyModel", "version": "1.0.0", "sha256": sha}


def test_over_ipc_acks_come_through_subscribe_to_iot_core(tmp_path: Path, model_path: Path) -> None:
    ipc = AckingGreengrassIpc(model_config(tmp_path, model_path))
    stop = threading.Event()
    with captured_logs() as records, device(tmp_path, model_path, lambda: ipc) as runtime:
        assert ipc.iot_core_kwargs["topic_name"] == "edge/gw-dev/acks"
        assert ipc.iot_core_kwargs["qos"] == "1"
        assert set(ipc.iot_core_kwargs) == {
            "topic_name", "qos", "on_stream_event", "on_stream_error", "on_stream_closed",
        }  # fmt: skip
        worker = threading.Thread(target=lambda: runtime.app.run(stop))
        worker.start()
        try:
            ipc.sensor_sends(series())
            assert ipc.got_anomaly.wait(5)
            assert wait_until(lambda: runtime.app.health(0.0)["spool"]["awaiting_ack"] == 1)
            # "Accepted by the nucleus" no longer deletes the row: only the cloud's ack does.
            (call,) = [c for c in ipc.published if c["topic_name"] == "edge/gw-dev/anomalies"]
            event_id = json.loads(call["payload"])["event_id"]
            ipc.cloud_says(b"{not json")  # counted and logged, and the stream lives on
            ipc.cloud_says(json.dumps({"schema": ACK_SCHEMA, "event_ids": [event_id]}))
            assert ipc.iot_core_kwargs["on_stream_error"](RuntimeError("stream hiccup")) is False
            spool = runtime.app.health(0.0)["spool"]
        finally:
            stop.set()
            worker.join(5)
    assert (spool["depth"], spool["awaiting_ack"]) == (0, 0)
    assert spool["acks"] == {"received": 1, "unknown_ids": 0, "malformed": 1, "resent": 0, "gave_up": 0}
    assert ipc.subscription_closed
    messages = [r.getMessage() for r in records]
    assert "ack refused" in messages
    # The memory spool of the nucleus is no longer where events can be lost: no warning about it.
    assert not [m for m in messages if m.startswith("events the nucleus accepted")]


def test_over_ipc_a_refused_subscription_stops_the_start(tmp_path: Path, model_path: Path) -> None:
    ipc = AckingGreengrassIpc(model_config(tmp_path, model_path), refuse=True)
    with (
        pytest.raises(TransportError, match=r"SubscribeToIoTCore on 'edge/gw-dev/acks' failed: Unauthorized"),
        device(tmp_path, model_path, lambda: ipc),
    ):
        pass
    assert ipc.closed


def test_over_ipc_a_closed_ack_stream_is_reported_and_subscribed_again(
    tmp_path: Path, model_path: Path
) -> None:
    ipc = AckingGreengrassIpc(model_config(tmp_path, model_path))
    with device(tmp_path, model_path, lambda: ipc) as runtime:
        assert runtime.app.health(0.0)["delivery"]["ack_subscription"] == "ok"
        ipc.iot_core_kwargs["on_stream_closed"]()  # the nucleus ends the stream (a restart, say)
        assert runtime.app.health(0.0)["delivery"]["ack_subscription"] == "closed"
        # Subscribed again after the first backoff (1 s), and acks are heard again.
        assert wait_until(lambda: runtime.app.health(0.0)["delivery"]["ack_subscription"] == "ok")
        assert ipc.iot_core_subscribes == 2
        ipc.cloud_says(json.dumps({"schema": ACK_SCHEMA, "event_ids": ["e-unknown"]}))
        assert runtime.app.health(0.0)["spool"]["acks"]["received"] == 1
