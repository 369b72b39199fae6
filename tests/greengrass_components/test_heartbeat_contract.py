"""The heartbeat fields the cloud reads exist in the heartbeat the component really sends.

The cloud's readers were once tested only with hand-written heartbeats that carried a field the component
never sent (``anomalous_windows``): canary health then saw an anomaly rate of 0 under every model, and
the anomaly-rate rule matched nothing. Here the body comes from ``DetectorApp.health``.
"""

from __future__ import annotations

import json
from pathlib import Path

from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.transport import InMemoryTransport
from infra.parts.ingest import ANOMALY_RATE_FIELD, PERIOD_WINDOWS_FIELD, anomaly_rate_sql
from lambdas.ingest.events import TOPIC_THING_FIELD, parse_heartbeat
from lambdas.lifecycle.health import ANOMALIES_COUNTER, WINDOWS_COUNTER

from .helpers import ListSource, samples, series
from .test_app import make_app


def _spiky(n: int, spikes: tuple[int, ...]) -> list[float]:
    values = series(n=n, spike_at=None)
    for index in spikes:
        values[index] += 10.0
    return values


def test_the_lifecycle_counters_are_in_a_real_heartbeat(model_path: Path) -> None:
    app = make_app(load_model(model_path), ListSource(samples(_spiky(60, (15, 30, 45)))), InMemoryTransport())
    app.run()
    body = json.loads(json.dumps(app.health(10.0)))  # as sent: JSON
    body[TOPIC_THING_FIELD] = "gw-01"  # what the health rule adds (topic(2))

    counters = parse_heartbeat(body).counters
    assert counters[WINDOWS_COUNTER] == app.stats.windows_scored == 53
    assert counters[ANOMALIES_COUNTER] == app.stats.anomalous_windows == 3


def test_the_anomaly_rate_rule_reads_the_period_of_a_real_heartbeat(model_path: Path) -> None:
    source = ListSource(samples(_spiky(60, (15, 30, 45))))
    app = make_app(load_model(model_path), source, InMemoryTransport())
    app.run()
    first = app.health(10.0)
    # The rule's SQL names exactly these fields, and the period's rate is the period's own fraction.
    assert f"SELECT {ANOMALY_RATE_FIELD} " in anomaly_rate_sql()
    assert f"{PERIOD_WINDOWS_FIELD} > 0" in anomaly_rate_sql()
    assert first[PERIOD_WINDOWS_FIELD] == 53
    assert first[ANOMALY_RATE_FIELD] == round(3 / 53, 6)

    idle = app.health(20.0)  # nothing scored since: no rate to report, cumulative counters unchanged
    assert idle[PERIOD_WINDOWS_FIELD] == 0
    assert idle["windows_scored"] == 53
    assert idle[ANOMALIES_COUNTER] == 3
