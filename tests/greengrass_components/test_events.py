from __future__ import annotations

import json

import numpy as np
import pytest

from greengrass_components.anomaly_detector.events import SCHEMA, EventBuilder, iso_utc
from greengrass_components.anomaly_detector.scoring import Decision


def decision(ts: float, *, anomalous: bool = True, stream: str = "s", score: float = 5.0) -> Decision:
    window = np.array([[1.1], [2.2], [71.3]], dtype=np.float32)
    return Decision(stream, ts, score, 3.0, anomalous, "v1", window)


def test_event_json_follows_contract() -> None:
    builder = EventBuilder(thing_name="gw-01", id_factory=lambda: "e" * 32)
    event = builder.offer(decision(1386453600.0), ("value",))
    assert event is not None
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
        "values": [[1.1], [2.2], [71.3]],  # float32 shown at its shortest round-trip repr
        "suppressed": 0,
    }
    assert b" " not in event.to_json_bytes()  # compact for the uplink


def test_event_ids_are_unique_uuid4_hex() -> None:
    builder = EventBuilder(thing_name="gw")
    ids = {builder.offer(decision(float(i)), ("value",)).event_id for i in range(50)}  # type: ignore[union-attr]
    assert len(ids) == 50
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_normal_decisions_give_no_event() -> None:
    assert EventBuilder(thing_name="gw").offer(decision(1.0, anomalous=False), ("value",)) is None


def test_cooldown_suppresses_per_stream_and_reports_count() -> None:
    builder = EventBuilder(thing_name="gw", cooldown_s=300)
    sent = [builder.offer(decision(t), ("value",)) for t in (0.0, 60.0, 120.0, 299.0, 300.0)]
    assert [e is not None for e in sent] == [True, False, False, False, True]
    assert sent[4] is not None
    assert sent[4].suppressed == 3
    assert builder.suppressed_total == 3
    # another stream is not held back by the first one's cooldown
    assert builder.offer(decision(100.0, stream="other"), ("value",)) is not None


def test_iso_utc_keeps_fractions_only_when_present() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00Z"
    assert iso_utc(0.5) == "1970-01-01T00:00:00.500000Z"


def test_negative_cooldown_is_refused() -> None:
    with pytest.raises(ValueError, match="cooldown_s must be >= 0"):
        EventBuilder(thing_name="gw", cooldown_s=-1)
