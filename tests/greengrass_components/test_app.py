from __future__ import annotations

import json
from pathlib import Path

import pytest

from greengrass_components.anomaly_detector.app import DetectorApp
from greengrass_components.anomaly_detector.errors import TransportError
from greengrass_components.anomaly_detector.events import EventBuilder, iso_utc
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.messages import Sample
from greengrass_components.anomaly_detector.model import LoadedModel, load_model
from greengrass_components.anomaly_detector.scoring import BatchPolicy, ScoringEngine
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport, Transport

from .conftest import ModelFactory
from .helpers import SPIKE_INDEX, T0, ListSource, counting, samples, series


def make_app(model: LoadedModel, source: ListSource, transport: Transport, **kwargs: object) -> DetectorApp:
    spool = kwargs.pop("spool", None) or Spool(":memory:")
    assert isinstance(spool, Spool)
    defaults: dict[str, object] = {
        "engine": ScoringEngine(model, batch_size=8),
        "source": source,
        "spool": spool,
        "forwarder": Forwarder(spool, transport, retry_initial_s=0.01),
        "drain_timeout_s": 1.0,
        "events": EventBuilder(thing_name="gw-01"),
        "thing_name": "gw-01",
        "anomaly_topic": "edge/gw-01/anomalies",
        "health_topic": "edge/gw-01/health",
    }
    defaults.update(kwargs)
    return DetectorApp(**defaults)  # type: ignore[arg-type]


def test_only_anomalous_windows_are_forwarded(model_path: Path) -> None:
    values = series(n=60, spike_at=None)
    for index in (15, 30, 45):
        values[index] += 10.0
    transport = InMemoryTransport()
    app = make_app(load_model(model_path), ListSource(samples(values)), transport)

    stats = app.run()

    expected = [iso_utc(T0 + i * 60) for i in (15, 30, 45)]
    assert [p.topic for p in transport.published] == ["edge/gw-01/anomalies"] * 3
    bodies = [json.loads(p.payload) for p in transport.published]
    assert [b["timestamp"] for b in bodies] == expected
    assert all(b["score"] > b["threshold"] for b in bodies)
    assert [b["values"][-1][0] for b in bodies] == pytest.approx([values[i] for i in (15, 30, 45)], rel=1e-6)
    assert all(len(b["values"]) == 8 for b in bodies)
    assert stats.anomaly_timestamps == expected
    assert stats.samples_in == 60
    assert stats.windows_scored == 53
    assert stats.anomalies_forwarded == 3
    assert stats.bytes_forwarded == sum(len(p.payload) for p in transport.published)


def test_malformed_messages_are_counted_and_skipped(model_path: Path) -> None:
    good = [
        json.dumps({"stream": "s", "timestamp": T0 + i, "values": {"value": v}}).encode()
        for i, v in enumerate(series())
    ]
    bad = [b"not json", b'{"stream": "s", "timestamp": 1, "values": {}}', b'{"stream": "s"}']
    transport = InMemoryTransport()
    app = make_app(load_model(model_path), ListSource(good[:10] + bad + good[10:]), transport)

    stats = app.run()

    assert stats.rejects == {"not_json": 1, "missing_channel": 1, "bad_timestamp": 1}
    assert stats.samples_in == 40
    assert stats.raw_bytes_in == sum(len(m) for m in good + bad)
    assert [json.loads(p.payload)["timestamp"] for p in transport.published] == [iso_utc(T0 + SPIKE_INDEX)]


class FailingTransport(InMemoryTransport):
    def publish(self, topic: str, payload: bytes) -> None:
        raise TransportError("broker gone")


def test_publish_failures_keep_the_event_in_the_spool(model_path: Path) -> None:
    spool = Spool(":memory:")
    app = make_app(load_model(model_path), ListSource(samples(series())), FailingTransport(), spool=spool)
    stats = app.run()
    assert stats.publish_failures >= 1
    assert stats.anomalies_forwarded == 0
    assert stats.anomalies_spooled == 1
    assert stats.anomalous_windows == 1
    (kept,) = spool.peek()
    assert json.loads(kept.payload)["timestamp"] == iso_utc(T0 + SPIKE_INDEX * 60)


def test_max_wait_flushes_a_partial_batch(model_path: Path) -> None:
    model, session = counting(load_model(model_path))
    now = [0.0]

    def clock() -> float:
        now[0] += 0.1  # each clock read advances 100 ms
        return now[0]

    app = make_app(
        model,
        ListSource(samples(series(n=12, spike_at=None))),
        InMemoryTransport(),
        engine=ScoringEngine(model, batch_size=1000),
        policy=BatchPolicy(max_batch=1000, max_wait_s=0.25, latency_budget_s=10.0),
        clock=clock,
    )
    app.run()
    # 5 windows; the target (rate x 10 s) is never reached, so only max-wait (and the final flush) run it.
    assert sum(session.batch_sizes) == 5
    assert len(session.batch_sizes) >= 2
    assert max(session.batch_sizes) < 5


def test_health_heartbeat_is_published_on_interval(model_path: Path) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    transport = InMemoryTransport()
    make_app(
        load_model(model_path),
        ListSource(samples(series(spike_at=None))),
        transport,
        health_interval_s=10.0,
        clock=clock,
        wall_clock=lambda: T0,
    ).run()
    health = [json.loads(p.payload) for p in transport.published if p.topic == "edge/gw-01/health"]
    # Heartbeats are best effort (a newer one replaces one not yet sent), so count loosely.
    assert len(health) >= 1
    assert health[0]["schema"] == "edgeml.health/1"
    assert health[0]["thing_name"] == "gw-01"
    assert health[0]["timestamp"] == iso_utc(T0)
    assert health[-1]["samples_in"] > 0
    assert health[0]["model_version"] == "20261124T201500Z-test0001"
    assert set(health[0]["latency_ms"]) == {"p50", "p99"}
    assert health[0]["spool"]["depth"] == 0
    assert health[0]["spool"]["policy"] == "drop_oldest"
    assert health[-1]["distribution"]["windows"] >= 1
    assert health[-1]["distribution"]["inputs"]["value"]["min"] >= 49.0
    assert (
        sum(health[-1]["distribution"]["score_histogram"]["counts"]) == health[-1]["distribution"]["windows"]
    )


class OneUpdate:
    def __init__(self, model: LoadedModel, after_calls: int) -> None:
        self.model: LoadedModel | None = model
        self.calls = 0
        self.after_calls = after_calls

    def take(self) -> LoadedModel | None:
        self.calls += 1
        if self.calls == self.after_calls and self.model is not None:
            model, self.model = self.model, None
            return model
        return None


def test_model_hot_swap_between_batches(make_model: ModelFactory) -> None:
    old = load_model(make_model(metadata={"model_version": "old", "threshold": "100"}))
    new = load_model(make_model(metadata={"model_version": "new", "threshold": "3"}))
    values = series(n=40, spike_at=None)
    values[35] += 10.0
    transport = InMemoryTransport()
    now = [0.0]

    def clock() -> float:
        now[0] += 0.02  # housekeeping (which takes new models) runs every 50 ms of this clock
        return now[0]

    app = make_app(
        old,
        ListSource([Sample(s.stream, s.timestamp, s.values) for s in samples(values)]),
        transport,
        model_updates=OneUpdate(new, after_calls=5),
        clock=clock,
    )
    stats = app.run()
    assert stats.model_swaps == 1
    assert stats.model_version == "new"
    (event,) = [json.loads(p.payload) for p in transport.published]
    assert event["model_version"] == "new"
    assert event["timestamp"] == iso_utc(T0 + 35 * 60)


class RejectingUpdates:
    """A model watcher that refused two candidate models and offers nothing to swap in."""

    rejected = 2

    def take(self) -> LoadedModel | None:
        return None


def test_run_summary_reports_the_watchers_rejected_models(model_path: Path) -> None:
    app = make_app(
        load_model(model_path),
        ListSource(list(samples(series(n=20, spike_at=None)))),
        InMemoryTransport(),
        model_updates=RejectingUpdates(),
    )
    stats = app.run()
    assert stats.model_swaps == 0
    assert stats.models_rejected == 2
    assert stats.summary(1.0)["models_rejected"] == 2
