"""Every event fits in ``max_event_bytes`` (contracts §6): one that IoT Core refuses would never leave the
spool, and the spool sends in order, so it would hold back every later event for good."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from greengrass_components.anomaly_detector.batch import Decision
from greengrass_components.anomaly_detector.config import parse_config
from greengrass_components.anomaly_detector.errors import ConfigError, TransportError
from greengrass_components.anomaly_detector.events import (
    IOT_CORE_MAX_MESSAGE_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENT_CELLS,
    MAX_EVENT_ROWS,
    EventBuilder,
    fit_event,
    float32_rows,
)
from greengrass_components.anomaly_detector.messages import Sample
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport
from lambdas.ingest import events as ingest_events

from .conftest import ModelFactory
from .helpers import T0, ListSource
from .test_app import make_app

CHANNELS = tuple(f"sensor_{i:02d}" for i in range(40))


class IotCoreLike(InMemoryTransport):
    """Refuses a payload over IoT Core's limit, as the broker (or the nucleus) does: never accepted."""

    def publish(self, topic: str, payload: bytes) -> None:
        if len(payload) > IOT_CORE_MAX_MESSAGE_BYTES:
            raise TransportError(f"payload of {len(payload)} bytes is over the 128 KiB limit")
        super().publish(topic, payload)


def wide_stream(stream: str, n: int, spike_at: int) -> list[Sample]:
    # Values with many digits: ~10 characters each as JSON, so a 512 x 40 window is ~200 KB.
    rng = np.random.default_rng(7)
    rows = (50.0 + rng.random((n, len(CHANNELS)))).astype(np.float32)
    rows[spike_at] += 100.0
    return [Sample(stream, T0 + i, tuple(float(v) for v in row)) for i, row in enumerate(rows)]


def test_an_event_over_iot_cores_limit_is_trimmed_and_does_not_block_later_events(
    make_model: ModelFactory,
) -> None:
    model = load_model(make_model(window_length=512, channels=list(CHANNELS)))
    first, second = wide_stream("press-1", 520, spike_at=515), wide_stream("press-2", 520, spike_at=515)
    transport, spool = IotCoreLike(), Spool(":memory:")
    app = make_app(model, ListSource([*first, *second]), transport, spool=spool, drain_timeout_s=5.0)

    stats = app.run()

    # Before the bound the first event (~200 KB) was retried forever and the second never left the spool.
    assert spool.depth == 0
    assert stats.anomalies_forwarded == 2
    bodies = [json.loads(p.payload) for p in transport.published]
    assert [b["stream"] for b in bodies] == ["press-1", "press-2"]
    for body, payload in zip(bodies, transport.published, strict=True):
        assert len(payload.payload) <= MAX_EVENT_BYTES
        assert body["values_truncated"] is True
        # The last rows of the peak window are kept: it ends at the spike (the peak sample).
        assert 1 < len(body["values"]) < 512
        spike = (first if body["stream"] == "press-1" else second)[515]
        assert body["values"][-1] == pytest.approx(list(spike.values), rel=1e-6)
        assert body["channels"] == list(CHANNELS)
    assert stats.publish_failures == 0


def decision(rows: int, cols: int = 1) -> Decision:
    window = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) + np.float32(0.123)
    return Decision("s", 100.0, 5.0, 3.0, True, "v1", window)


def test_fit_keeps_the_most_rows_that_fit_and_marks_the_cut() -> None:
    builder = EventBuilder(thing_name="gw", max_event_bytes=4096)
    builder.offer(decision(600), ("value",))
    (event,) = builder.close_all(("value",))
    payload = event.encode(4096)

    assert len(payload) <= 4096
    assert event.values_truncated
    assert json.loads(payload)["values_truncated"] is True
    full_rows = float32_rows(decision(600).window)
    assert event.values == full_rows[-len(event.values) :]
    # One more row would not have fitted: the cut is as small as the bound allows.
    one_more = orjson.dumps({**event.to_dict(), "values": full_rows[-len(event.values) - 1 :]})
    assert len(one_more) > 4096


def test_an_event_that_fits_is_unchanged() -> None:
    builder = EventBuilder(thing_name="gw")
    builder.offer(decision(8), ("value",))
    (event,) = builder.close_all(("value",))
    assert fit_event(event, MAX_EVENT_BYTES) is event
    assert b"values_truncated" not in event.to_json_bytes()
    assert len(event.values) == 8


def test_an_event_whose_other_fields_do_not_fit_is_refused_by_encode() -> None:
    channels = tuple(f"c{i}-{'x' * 120}" for i in range(40))  # ~5 KB of channel names alone
    builder = EventBuilder(thing_name="gw", max_event_bytes=4096)
    builder.offer(decision(2, cols=40), channels)
    (event,) = builder.close_all(channels)
    assert event.values == []
    with pytest.raises(ValueError, match=r"is \d+ bytes of JSON; the limit is 4096"):
        event.encode(4096)


def test_max_event_bytes_is_configurable_within_iot_cores_limit(tmp_path: Path) -> None:
    args = ["--model", "m.onnx", "--source", "file", "--file", "d.csv", "--stream", "s", "--thing-name", "gw"]
    assert parse_config(args, env={}).max_event_bytes == MAX_EVENT_BYTES == 120 * 1024
    assert parse_config([*args, "--max-event-bytes", "65536.0"], env={}).max_event_bytes == 65536
    with pytest.raises(ConfigError, match=r"max event bytes must be 4096\.\.131072 .*got 131073"):
        parse_config([*args, "--max-event-bytes", "131073"], env={})
    with pytest.raises(ValueError, match="max_event_bytes must be >= 4096, got 100"):
        EventBuilder(thing_name="gw", max_event_bytes=100)


def test_values_stay_within_the_clouds_row_and_cell_limits() -> None:
    """The ingest Lambda refuses over 1,024 rows or 4,096 cells of `values`: the edge never sends them."""
    assert (MAX_EVENT_ROWS, MAX_EVENT_CELLS) == (ingest_events.MAX_VALUE_ROWS, ingest_events.MAX_VALUE_CELLS)
    channels = tuple(f"c{i}" for i in range(10))
    builder = EventBuilder(thing_name="gw")
    builder.offer(decision(2000, cols=10), channels)  # small numbers: 20,000 cells fit in the bytes bound
    (event,) = builder.close_all(channels)

    assert event.values_truncated
    assert len(event.values) == MAX_EVENT_CELLS // 10
    assert event.values == float32_rows(decision(2000, cols=10).window)[-len(event.values) :]
    parsed = ingest_events.parse_message(
        {**json.loads(event.to_json_bytes()), ingest_events.TOPIC_THING_FIELD: "gw"}
    )  # the cloud's own parser accepts it
    assert isinstance(parsed, ingest_events.AnomalyEvent)
    assert len(parsed.values) == MAX_EVENT_CELLS // 10
