from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from greengrass_components.anomaly_detector.batch import Decision
from greengrass_components.anomaly_detector.events import (
    SCHEMA,
    AnomalyEvent,
    EventBuilder,
    float32_rows,
    iso_utc,
)

CH = ("value",)


def decision(ts: float, *, anomalous: bool = True, stream: str = "s", score: float = 5.0) -> Decision:
    window = np.array([[1.1], [2.2], [71.3 + score]], dtype=np.float32)
    return Decision(stream, ts, score, 3.0, anomalous, "v1", window)


def one_window_event(builder: EventBuilder, ts: float, stream: str = "s") -> list[object]:
    opened = builder.offer(decision(ts, stream=stream), CH)
    assert opened == []  # an event is only complete when its anomaly ends
    return list(builder.offer(decision(ts + 1, anomalous=False, stream=stream), CH))


def test_event_json_follows_contract() -> None:
    builder = EventBuilder(thing_name="gw-01", id_factory=lambda: "e" * 32)
    builder.offer(decision(1386453600.0), CH)
    (event,) = builder.offer(decision(1386453900.0, anomalous=False), CH)
    body = json.loads(event.to_json_bytes())
    assert body == {
        "schema": SCHEMA,
        "event_id": "e" * 32,
        "thing_name": "gw-01",
        "stream": "s",
        "timestamp": "2013-12-07T22:00:00Z",
        "start": "2013-12-07T22:00:00Z",
        "end": "2013-12-07T22:00:00Z",
        "score": 5.0,
        "peak_score": 5.0,
        "threshold": 3.0,
        "model_version": "v1",
        "channels": ["value"],
        "values": [[1.1], [2.2], [76.3]],  # float32 shown at its shortest round-trip repr
        "suppressed": 0,
        "windows": 1,
    }
    assert b" " not in event.to_json_bytes()  # compact for the uplink


def test_consecutive_anomalous_windows_merge_into_one_event_with_the_peak() -> None:
    builder = EventBuilder(thing_name="gw")
    scores = [4.0, 9.0, 6.0]
    for i, score in enumerate(scores):
        assert builder.offer(decision(100.0 + i, score=score), CH) == []
    (event,) = builder.offer(decision(103.0, anomalous=False), CH)
    assert (event.start, event.end, event.timestamp) == (iso_utc(100.0), iso_utc(102.0), iso_utc(101.0))
    assert event.peak_score == event.score == 9.0
    assert event.windows == 3
    assert event.values[-1] == [pytest.approx(71.3 + 9.0, rel=1e-6)]  # the peak window's raw values
    assert builder.open_streams == ()


def test_long_anomaly_is_cut_into_bounded_events() -> None:
    builder = EventBuilder(thing_name="gw", max_event_windows=3)
    out = [e for i in range(7) for e in builder.offer(decision(float(i)), CH)]
    assert [e.windows for e in out] == [3, 3]
    assert [e.windows for e in builder.close_all(CH)] == [1]


def test_quiet_stream_closes_its_event_after_idle_time() -> None:
    builder = EventBuilder(thing_name="gw", idle_close_s=5.0)
    builder.offer(decision(1.0), CH, now=10.0)
    assert builder.expire(14.9, CH) == []
    (event,) = builder.expire(15.0, CH)
    assert event.stream == "s"


def test_event_ids_are_unique_uuid4_hex() -> None:
    builder = EventBuilder(thing_name="gw", burst=100)
    ids = {e.event_id for i in range(50) for e in one_window_event(builder, float(i * 10))}  # type: ignore[attr-defined]
    assert len(ids) == 50
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_normal_decisions_give_no_event() -> None:
    assert EventBuilder(thing_name="gw").offer(decision(1.0, anomalous=False), CH) == []


def test_storm_is_rate_limited_per_stream_and_the_suppressed_count_is_reported() -> None:
    # burst 2, one token per hour of sample time
    builder = EventBuilder(thing_name="gw", burst=2, rate_per_hour=1.0)
    sent = [one_window_event(builder, t) for t in (0.0, 10.0, 20.0, 30.0, 40.0)]
    assert [len(s) for s in sent] == [1, 1, 0, 0, 0]
    assert builder.suppressed_total == 3
    (later,) = one_window_event(builder, 3600.0 + 30.0)
    assert later.suppressed == 3  # type: ignore[attr-defined]
    # another stream has its own bucket
    assert len(one_window_event(builder, 50.0, stream="other")) == 1


def test_cooldown_still_holds_events_back() -> None:
    builder = EventBuilder(thing_name="gw", cooldown_s=300)
    sent = [one_window_event(builder, t) for t in (0.0, 60.0, 400.0)]
    assert [len(s) for s in sent] == [1, 0, 1]
    assert sent[2][0].suppressed == 1  # type: ignore[attr-defined]


def test_iso_utc_keeps_fractions_only_when_present() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00Z"
    assert iso_utc(0.5) == "1970-01-01T00:00:00.500000Z"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_per_hour, cooldown_s and idle_close_s must be >= 0"):
        EventBuilder(thing_name="gw", cooldown_s=-1)
    with pytest.raises(ValueError, match="burst must be >= 1, got 0"):
        EventBuilder(thing_name="gw", burst=0)


def test_event_values_are_the_shortest_float32_decimals() -> None:
    rng = np.random.default_rng(0)
    for scale in (1e-30, 1e-3, 1.0, 1e3, 1e9, 1e30):
        window = (rng.standard_normal((400, 3)) * scale).astype(np.float32)
        assert float32_rows(window) == [[float(str(v)) for v in row] for row in window]
    assert float32_rows(np.array([[71.3]], dtype=np.float32)) == [[71.3]]


def test_event_with_a_non_finite_score_is_refused_not_written_as_null() -> None:
    event = AnomalyEvent(
        event_id="e1", thing_name="gw", stream="s", timestamp="t", start="t", end="t",
        score=float("inf"), peak_score=float("inf"), threshold=1.0, model_version="v",
        channels=["value"], values=[[1.0]], suppressed=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="e1 has a non-finite score"):
        event.to_json_bytes()
    finite = dataclasses.replace(event, score=2.5, peak_score=2.5)
    assert json.loads(finite.to_json_bytes())["score"] == 2.5
