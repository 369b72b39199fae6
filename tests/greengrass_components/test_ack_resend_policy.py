"""Ack mode's resend policy (docs/contracts.md §6c): new events and heartbeats are not held back by resends,
resends back off exponentially, an event the cloud never acks while it acks others is given up (and
counted), an ack that lands during a pass saves the resend, and a row from an earlier ack-mode run is
sent like any other once the ack mode is off."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from greengrass_components.anomaly_detector.acks import ACK_SCHEMA, AckHandler
from greengrass_components.anomaly_detector.errors import TransportError
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .helpers import ListSource
from .test_app import make_app
from .test_spool_write_failures import captured_logs

ANOMALIES = "edge/gw-01/anomalies"
HEALTH = "edge/gw-01/health"
ACKS = "edge/gw-01/acks"
TIMEOUT = 30.0
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def put(spool: Spool, *event_ids: str, stream: str = "s") -> None:
    for event_id in event_ids:
        payload = json.dumps({"event_id": event_id, "timestamp": "2027-01-15T08:00:00Z"}).encode()
        spool.put(event_id=event_id, stream=stream, topic=ANOMALIES, payload=payload, created_at=0.0)


class SlowCloud(InMemoryTransport):
    """Each publish takes a second of the clock (a PUBACK round trip), no ack ever comes, and after
    ``budget`` publishes every publish fails, which ends the test's passes."""

    def __init__(self, clock: Clock, budget: int, during: Callable[[int], None]) -> None:
        super().__init__()
        self._clock = clock
        self._budget = budget
        self._during = during

    def publish(self, topic: str, payload: bytes) -> None:
        if len(self.published) >= self._budget:
            raise TransportError("test budget spent")
        self._clock.now += 1.0
        super().publish(topic, payload)
        self._during(len(self.published))

    def ids(self) -> list[str]:
        return [
            json.loads(p.payload)["event_id"] if p.topic == ANOMALIES else "heartbeat" for p in self.published
        ]


def run_until_spent(forwarder: Forwarder, cloud: SlowCloud, clock: Clock, budget: int) -> None:
    while len(cloud.published) < budget:
        forwarder.send_pending()
        clock.now += 1.0


def test_a_new_event_is_not_held_back_by_resends_when_no_ack_comes() -> None:
    # 200 events awaiting acks that do not come; a resend pass takes longer than the ack timeout.
    clock, spool = Clock(), Spool(":memory:")
    put(spool, *(f"old{i}" for i in range(200)))
    cloud = SlowCloud(clock, budget=600, during=lambda count: put(spool, "new") if count == 300 else None)
    forwarder = Forwarder(spool, cloud, ack_timeout_s=TIMEOUT, clock=clock, wall_clock=clock)

    run_until_spent(forwarder, cloud, clock, 600)

    ids = cloud.ids()
    assert ids[:200] == [f"old{i}" for i in range(200)]
    assert set(ids[200:300]) < {f"old{i}" for i in range(200)}  # resending since, no ack coming
    # Spooled during the resends, sent after at most a handful of them (10 per look for new events).
    assert "new" in ids[300:311], ids[300:320]


def test_a_heartbeat_goes_out_within_seconds_while_rows_are_due() -> None:
    clock, spool = Clock(), Spool(":memory:")
    put(spool, *(f"old{i}" for i in range(200)))
    forwarder: Forwarder
    cloud = SlowCloud(
        clock,
        budget=600,
        during=lambda count: forwarder.offer_health(HEALTH, b"{}") if count == 250 else None,
    )
    forwarder = Forwarder(spool, cloud, ack_timeout_s=TIMEOUT, clock=clock, wall_clock=clock)

    run_until_spent(forwarder, cloud, clock, 600)

    # Offered at the 250th publish (a second each): out within HEALTH_MAX_WAIT_S (5 s), not never.
    assert "heartbeat" in cloud.ids()[250:257], cloud.ids()[250:260]
    assert forwarder.health_sent == 1


def test_resends_back_off_exponentially_up_to_64_timeouts() -> None:
    # An IPC device offline behind the nucleus: every publish succeeds, no ack can come, for a day.
    clock, spool = Clock(), Spool(":memory:")
    put(spool, "e0")
    transport = InMemoryTransport()
    forwarder = Forwarder(spool, transport, ack_timeout_s=TIMEOUT, wall_clock=clock)  # random jitter
    sends: list[float] = []
    for _ in range(8640):  # a pass every 10 s
        before = len(transport.published)
        assert forwarder.send_pending()
        if len(transport.published) > before:
            sends.append(clock.now)
        clock.now += 10.0

    gaps = [b - a for a, b in itertools.pairwise(sends)]
    for resends, gap in enumerate(gaps):
        delay = TIMEOUT * 2 ** min(resends, 6)
        assert delay <= gap <= delay * 1.1 + 10.0, (resends, gap)
    # 30 s, 60 s, ... 32 min, then every 32 to 35 min: 45 to 50 publishes a day instead of 2880.
    assert 45 <= len(sends) <= 50
    assert spool.depth == 1  # no ack came at all: kept, never given up


def test_the_jitter_is_up_to_a_tenth_of_the_delay_and_injectable() -> None:
    spool, transport = Spool(":memory:"), InMemoryTransport()
    clock = Clock()
    put(spool, "e0")
    forwarder = Forwarder(spool, transport, ack_timeout_s=TIMEOUT, wall_clock=clock, jitter=lambda: 0.5)
    assert forwarder.send_pending()
    clock.now += TIMEOUT * 1.05 - 0.01
    assert forwarder.send_pending()
    assert len(transport.published) == 1
    clock.now += 0.01  # 30 s x (1 + 0.1 x 0.5) after the send
    assert forwarder.send_pending()
    assert len(transport.published) == 2
    clock.now += 2 * TIMEOUT * 1.05  # the first resend waits twice as long
    assert forwarder.send_pending()
    assert len(transport.published) == 3


class PoisonCloud(InMemoryTransport):
    """Stores and acks every event at once, except those in ``refused`` (the cloud's ingest refuses them:
    a stream name it does not accept, say), which it never acks."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    def publish(self, topic: str, payload: bytes) -> None:
        super().publish(topic, payload)
        event_id = json.loads(payload)["event_id"]
        if event_id not in self.refused:
            self.deliver(ACKS, json.dumps({"schema": ACK_SCHEMA, "event_ids": [event_id]}).encode())

    def count(self, event_id: str) -> int:
        return sum(1 for p in self.published if json.loads(p.payload)["event_id"] == event_id)


def poison_setup(max_resends: int) -> tuple[Spool, PoisonCloud, Clock, Forwarder]:
    clock, spool = Clock(), Spool(":memory:")
    cloud = PoisonCloud({"poison"})
    acks = AckHandler(spool, wall_clock=clock)
    cloud.subscribe(ACKS, acks.handle)
    forwarder = Forwarder(
        spool,
        cloud,
        ack_timeout_s=TIMEOUT,
        ack_max_resends=max_resends,
        last_ack_at=acks.last_received_at,
        wall_clock=clock,
        jitter=lambda: 0.0,
    )
    return spool, cloud, clock, forwarder


def test_an_event_never_acked_while_others_are_is_given_up_and_counted() -> None:
    spool, cloud, clock, forwarder = poison_setup(max_resends=2)
    put(spool, "poison", stream="bad")
    with captured_logs() as records:
        for cycle in range(12):  # each cycle: a fresh event the cloud acks, then a timeout's wait
            put(spool, f"ok{cycle}")
            clock.now += 1.0
            assert forwarder.send_pending()
            clock.now += TIMEOUT * 2 ** min(cycle, 6)

    assert cloud.count("poison") == 3  # sent, then resent twice (ackMaxResends), then given up
    assert [e.event_id for e in spool.peek()] == []
    assert (forwarder.resent, forwarder.gave_up) == (2, 1)
    assert spool.dropped() == {"bad": 1}  # persisted like the full-spool policy's drops
    (line,) = [r for r in records if r.getMessage().startswith("event given up")]
    assert line.levelname == "WARNING"
    assert (line.event_id, line.stream, line.resends) == ("poison", "bad", 2)  # type: ignore[attr-defined]


def test_a_device_whose_acks_do_not_come_gives_nothing_up_until_they_do() -> None:
    spool, cloud, clock, forwarder = poison_setup(max_resends=2)
    cloud.refused = {"e0"}
    put(spool, "e0")
    for resends in range(6):  # offline (no ack at all): sent, then resent five times, ackMaxResends 2
        clock.now += TIMEOUT * 2 ** min(resends, 6)
        assert forwarder.send_pending()
    assert (cloud.count("e0"), forwarder.gave_up) == (6, 0)

    # Back online: acks of other events come. e0 gets ackMaxResends more tries, counted from now.
    cloud.refused = set()
    put(spool, "e1")
    assert forwarder.send_pending()
    clock.now += TIMEOUT * 64
    assert forwarder.send_pending()
    assert cloud.count("e0") == 7
    assert spool.depth == 0  # this time its ack came


def test_a_row_acked_during_the_pass_is_not_resent() -> None:
    clock, spool = Clock(), Spool(":memory:")
    put(spool, "e0", "e1", "e2")
    transport = InMemoryTransport()
    forwarder = Forwarder(spool, transport, ack_timeout_s=TIMEOUT, wall_clock=clock)
    assert forwarder.send_pending()
    clock.now += TIMEOUT * 1.1 + 1

    class LateAcks(InMemoryTransport):
        def publish(self, topic: str, payload: bytes) -> None:
            super().publish(topic, payload)
            # The acks of the other two arrive while the first row of the batch is being resent.
            spool.ack([e for e in ("e0", "e1", "e2") if e != json.loads(payload)["event_id"]])

    late = LateAcks()
    forwarder = Forwarder(spool, late, ack_timeout_s=TIMEOUT, wall_clock=clock)
    assert forwarder.send_pending()
    assert len(late.published) == 1
    assert forwarder.resent == 1
    assert spool.depth == 1


def test_with_the_ack_mode_off_a_row_sent_by_an_ack_mode_run_is_just_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    put(spool, "e0")
    spool.mark_sent(spool.peek()[0].seq, at=NOW - 3600)  # an earlier run in ack mode sent it
    transport = InMemoryTransport()
    forwarder = Forwarder(spool, transport)
    with captured_logs() as records:
        assert forwarder.send_pending()
    assert len(transport.published) == 1
    assert (spool.depth, spool.awaiting_ack) == (0, 0)
    assert forwarder.resent == 0  # nothing waited for an ack in this run
    assert not [r for r in records if "no ack within the ack timeout" in r.getMessage()]


def test_the_heartbeat_counts_given_up_events_as_dropped(model_path: Path) -> None:
    spool, cloud, clock, forwarder = poison_setup(max_resends=1)
    app = make_app(load_model(model_path), ListSource([]), cloud, spool=spool, forwarder=forwarder)
    put(spool, "poison")
    for cycle in range(4):
        put(spool, f"ok{cycle}")
        assert forwarder.send_pending()
        clock.now += TIMEOUT * 2 ** min(cycle, 6)
    health = app.health(0.0)
    assert health["spool"]["acks"]["gave_up"] == 1
    assert health["spool"]["dropped"] == 1
    assert app.stats.summary(1.0)["spool_dropped"] == 1


@pytest.mark.parametrize(("timeout", "message"), [(0.001, "got 0.001"), (9.99, "got 9.99"), (-1.0, "got -1")])
def test_the_forwarder_refuses_an_ack_timeout_under_ten_seconds(timeout: float, message: str) -> None:
    with pytest.raises(ValueError, match=rf"ack_timeout_s must be 0 \(off\) or >= 10, {message}"):
        Forwarder(Spool(":memory:"), InMemoryTransport(), ack_timeout_s=timeout)
