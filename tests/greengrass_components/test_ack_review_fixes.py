"""Ack-mode corner cases a review reproduced: a lone-surrogate stream, a clock that ran ahead, the SDK's
late close of a refused subscribe, and a close() racing a re-subscribe."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from greengrass_components.anomaly_detector.acks import ACK_SCHEMA, AckHandler
from greengrass_components.anomaly_detector.errors import MessageError, TransportError
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.messages import BAD_STREAM, MessageParser
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport, IpcIotCoreSubscription

from .conftest import ModelFactory
from .helpers import T0, ListSource, series, wait_until
from .test_app import make_app


def test_a_lone_surrogate_stream_is_refused_not_a_crash(make_model: ModelFactory) -> None:
    """json.loads (the IPC SDK's parser, and our fallback) accepts "\\ud800"; no event could carry it."""
    with pytest.raises(MessageError) as caught:
        MessageParser(["value"]).parse_document(
            {"stream": "\ud800", "timestamp": T0, "values": {"value": 1.0}}
        )
    assert caught.value.kind == BAD_STREAM
    model = load_model(make_model())
    messages = [
        json.dumps({"stream": "\ud800", "timestamp": T0 + i, "values": {"value": v}}).encode()
        for i, v in enumerate(series(n=40))
    ]
    stats = make_app(model, ListSource(messages), InMemoryTransport()).run()  # used to raise TypeError
    assert stats.rejects == {BAD_STREAM: 40}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_ack_stamped_by_a_clock_that_ran_ahead_does_not_give_an_offline_devices_events_up() -> None:
    wall = Clock(1_800_000_000.0 + 86_400)  # a day ahead (a bad time source)
    spool = Spool(":memory:")
    for event_id in ("X", "Y"):
        spool.put(event_id=event_id, stream="s", topic="a", payload=b"{}", created_at=0.0)
    acks = AckHandler(spool, wall_clock=wall)
    forwarder = Forwarder(
        spool,
        InMemoryTransport(),
        ack_timeout_s=60,
        ack_max_resends=3,
        last_ack_at=acks.last_received_at,
        wall_clock=wall,
        jitter=lambda: 0.0,
    )
    forwarder.send_pending()
    wall.now += 1
    acks.handle(json.dumps({"schema": ACK_SCHEMA, "event_ids": ["Y"]}).encode())
    wall.now = 1_800_000_010.0  # NTP corrects the clock; the device is offline from now on: no ack comes
    for _ in range(200):  # ~17 hours of passes
        wall.now += 300
        forwarder.send_pending()
    assert forwarder.gave_up == 0
    assert spool.depth == 1


class SdkLikeIpc:
    """Like awsiot's eventstreamrpc: a refused subscribe raises, then closes its stream a moment later."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refusing = False
        self.slow_s = 0.0
        self.live: set[int] = set()

    def subscribe_to_iot_core(self, **kwargs: Any) -> tuple[object, SimpleNamespace]:
        self.calls.append(kwargs)
        number = len(self.calls)
        if self.refusing:
            threading.Timer(0.002, kwargs["on_stream_closed"]).start()
            raise PermissionError("UnauthorizedError")
        time.sleep(self.slow_s)
        self.live.add(number)
        return object(), SimpleNamespace(close=lambda: self.live.discard(number))

    def nucleus_closes(self) -> None:
        self.live.discard(len(self.calls))
        self.calls[-1]["on_stream_closed"]()


def resubscribers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "ack-resubscribe"]


def test_a_refused_start_leaves_no_re_subscriber_behind() -> None:
    ipc = SdkLikeIpc()
    ipc.refusing = True
    with pytest.raises(TransportError):
        IpcIotCoreSubscription(ipc, topic="edge/gw/acks", on_message=lambda _p: None, retry_initial_s=0.01)
    time.sleep(0.2)  # the late close has run
    assert len(ipc.calls) == 1
    assert resubscribers() == []


def test_steady_refusals_are_reported_as_refused_and_a_restored_grant_recovers() -> None:
    ipc = SdkLikeIpc()
    subscription = IpcIotCoreSubscription(
        ipc, topic="edge/gw/acks", on_message=lambda _p: None, retry_initial_s=0.02, retry_max_s=0.05
    )
    ipc.refusing = True
    ipc.nucleus_closes()
    assert wait_until(lambda: len(ipc.calls) >= 4)
    time.sleep(0.01)
    assert subscription.state == "refused"  # not overwritten by the refused attempts' late closes
    ipc.refusing = False
    assert wait_until(lambda: subscription.state == "ok")
    assert len(ipc.live) == 1
    subscription.close()


def test_close_during_a_re_subscribe_leaves_no_live_subscription() -> None:
    ipc = SdkLikeIpc()
    subscription = IpcIotCoreSubscription(
        ipc, topic="edge/gw/acks", on_message=lambda _p: None, retry_initial_s=0.01
    )
    ipc.slow_s = 0.5  # the nucleus answers slowly
    ipc.nucleus_closes()
    assert wait_until(lambda: len(ipc.calls) == 2)  # the re-subscribe is under way
    subscription.close()
    assert wait_until(lambda: resubscribers() == [])
    assert ipc.live == set()
