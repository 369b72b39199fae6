"""Valid-looking input that used to break the component (a review's reproductions, each now a test).

Values near float32's limit overflow the model's score; timestamps in milliseconds look like the year
33658; a row batch with one late sample was half accepted; a model swap could merge two models' windows
into one event; a replay row that is not UTF-8 stopped the replay.
"""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pytest

from greengrass_components.anomaly_detector.app import NON_FINITE_SCORE
from greengrass_components.anomaly_detector.batch import finite_scores
from greengrass_components.anomaly_detector.errors import MessageError, SourceError
from greengrass_components.anomaly_detector.messages import (
    BAD_TIMESTAMP,
    DUPLICATE_TIMESTAMP,
    NOT_UTF8,
    OUT_OF_ORDER,
    MessageParser,
    encode_binary,
)
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.scoring import BatchPolicy, ScoringEngine
from greengrass_components.anomaly_detector.sources import FileReplaySource
from greengrass_components.anomaly_detector.transport import InMemoryTransport
from tests.greengrass_components.conftest import build_model
from tests.greengrass_components.helpers import T0, ListSource
from tests.greengrass_components.test_app import make_app

HUGE = 3.0e38  # finite and within float32, but the score's arithmetic overflows on it
PP = json.dumps({"method": "likelihood", "short_window": 5, "long_window": 300, "warmup": 50})


def single(ts: float, value: float, stream: str = "s") -> bytes:
    return json.dumps({"stream": stream, "timestamp": ts, "values": {"value": value}}).encode()


def anomaly_starts(transport: InMemoryTransport) -> list[str]:
    return [json.loads(p.payload)["start"] for p in transport.published if p.topic.endswith("anomalies")]


def test_finite_scores_zeroes_and_counts_only_the_non_finite():
    scores = np.array([1.0, np.inf, 2.0, np.nan, -np.inf], dtype=np.float32)
    cleaned, count = finite_scores(scores)
    assert count == 3
    assert cleaned.dtype == np.float32
    assert cleaned.tolist() == [1.0, 0.0, 2.0, 0.0, 0.0]
    same, none = finite_scores(np.array([1.0, 3e38, 3e38], dtype=np.float32))  # their sum overflows float32
    assert none == 0
    assert same.tolist() == pytest.approx([1.0, 3e38, 3e38])


def test_values_that_overflow_the_score_are_counted_not_a_crash(tmp_path):
    model = load_model(build_model(tmp_path / "m.onnx"))
    messages = [single(T0 + i, 50.0) for i in range(8)] + [single(T0 + 8 + i, HUGE) for i in range(8)]
    messages += [single(T0 + 100 + i, 50.0) for i in range(20)]
    transport = InMemoryTransport()
    app = make_app(model, ListSource(messages), transport)

    stats = app.run()  # used to raise ValueError from the event's JSON encoding

    assert stats.rejects.get(NON_FINITE_SCORE, 0) > 0
    assert stats.samples_in == len(messages)
    for published in transport.published:  # events and heartbeats: strict JSON, finite numbers
        orjson.loads(published.payload)


@pytest.mark.parametrize("blockwise", [False, True])
def test_an_overflowed_score_does_not_blind_the_post_processing(tmp_path, blockwise):
    """One inf used to turn the per-window likelihood's running sums into NaN for good."""
    model = load_model(build_model(tmp_path / "m.onnx", metadata={"edge_postprocess": PP}))
    rng = random.Random(1)
    values = [50 + rng.random() for _ in range(1500)]
    values[600:604] = [HUGE] * 4
    values[1200:1203] = [80.0] * 3  # the real anomaly, 600 rows later
    if blockwise:
        messages = [
            json.dumps(
                {
                    "stream": "s",
                    "timestamps": [T0 + j for j in range(k, k + 50)],
                    "values": {"value": values[k : k + 50]},
                }
            ).encode()
            for k in range(0, 1500, 50)
        ]
    else:
        messages = [single(T0 + i, v) for i, v in enumerate(values)]
    transport = InMemoryTransport()
    app = make_app(model, ListSource(messages), transport, engine=ScoringEngine(model, batch_size=64))

    stats = app.run()

    assert stats.rejects.get(NON_FINITE_SCORE, 0) > 0
    late = [s for s in anomaly_starts(transport) if s >= "2023-11-14T22:33:00Z"]
    assert late, f"the anomaly at row 1200 was not reported: {anomaly_starts(transport)}"


@pytest.mark.parametrize(
    "raw",
    [1.7e12, -1.0, 2.0**32, "1969-12-31T23:59:59", "2200-01-01T00:00:00"],
)
def test_timestamps_outside_1970_2106_are_refused(raw):
    parser = MessageParser(["value"])
    payload = json.dumps({"stream": "s", "timestamp": raw, "values": {"value": 1.0}})
    with pytest.raises(MessageError) as caught:
        parser.parse(payload)
    assert caught.value.kind == BAD_TIMESTAMP


def test_a_block_with_one_millisecond_timestamp_is_refused_whole():
    parser = MessageParser(["value"])
    stamps = [T0, T0 + 1, (T0 + 2) * 1000]
    columnar = json.dumps({"stream": "s", "timestamps": stamps, "values": {"value": [1.0, 2.0, 3.0]}})
    binary = encode_binary("s", np.array(stamps), np.array([1.0, 2.0, 3.0], dtype=np.float32), ["value"])
    for payload in (columnar, binary):
        with pytest.raises(MessageError) as caught:
            parser.parse(payload)
        assert caught.value.kind == BAD_TIMESTAMP


def test_millisecond_timestamps_no_longer_crash_the_event_time(tmp_path):
    model = load_model(build_model(tmp_path / "m.onnx"))
    messages = [single(1e12 + i, 50.0) for i in range(7)] + [single(1e12 + 7, 500.0)]
    messages += [single(T0 + i, 50.0) for i in range(7)] + [single(T0 + 7, 500.0), single(T0 + 8, 50.0)]
    transport = InMemoryTransport()
    app = make_app(model, ListSource(messages), transport)

    stats = app.run()  # used to raise "year 33658 is out of range" when the event closed

    assert stats.rejects[BAD_TIMESTAMP] == 8
    assert len(anomaly_starts(transport)) == 1  # the stream still works with proper timestamps


@pytest.mark.parametrize(
    ("offsets", "kind"),
    [((1, 2, 3, 2.5, 4), OUT_OF_ORDER), ((1, 2, 2, 3), DUPLICATE_TIMESTAMP)],
)
def test_a_row_batch_out_of_order_is_refused_whole(tmp_path, offsets, kind):
    model = load_model(build_model(tmp_path / "m.onnx"))
    rows = [{"timestamp": T0 + t, "values": {"value": 50.0}} for t in offsets]
    app = make_app(
        model, ListSource([json.dumps({"stream": "s", "samples": rows}).encode()]), InMemoryTransport()
    )

    stats = app.run()

    assert stats.rejects == {kind: 1}
    assert app._engine.stream_count == 0  # nothing of it reached the windows


def test_a_row_batch_starting_before_the_newest_sample_is_refused_whole(tmp_path):
    model = load_model(build_model(tmp_path / "m.onnx"))
    first = [{"timestamp": T0 + t, "values": {"value": 50.0}} for t in range(10)]
    late = [{"timestamp": T0 + t, "values": {"value": 50.0}} for t in (5, 20, 21)]
    messages = [json.dumps({"stream": "s", "samples": rows}).encode() for rows in (first, late)]
    app = make_app(model, ListSource(messages), InMemoryTransport())

    stats = app.run()

    assert stats.rejects == {OUT_OF_ORDER: 1}
    # The newest sample is still the first batch's: the later two of the refused batch were not taken.
    assert app._engine._windows._windows["s"].last_timestamp == T0 + 9
    assert stats.windows_scored == 10 - 8 + 1


class _OneSwap:
    rejected = 0

    def __init__(self, model: object) -> None:
        self._model: object | None = model

    def take(self) -> object | None:
        model, self._model = self._model, None
        return model


def test_a_model_swap_never_merges_two_models_windows_into_one_event(tmp_path):
    old = load_model(
        build_model(tmp_path / "old.onnx", metadata={"model_version": "OLD", "threshold": "3.0"})
    )
    new = load_model(
        build_model(tmp_path / "new.onnx", metadata={"model_version": "NEW", "threshold": "2.0"})
    )

    def wild(n: int, k0: int) -> list[float]:
        return [50.0 + (100.0 if (k0 + i) % 2 else -100.0) for i in range(n)]

    def block(start: int, values: list[float]) -> bytes:
        stamps = [T0 + start + i for i in range(len(values))]
        return json.dumps({"stream": "s", "timestamps": stamps, "values": {"value": values}}).encode()

    messages = [block(0, [50.0] * 8 + wild(12, 8)), block(20, wild(20, 20)), block(40, [50.0] * 20)]
    policy = BatchPolicy(max_batch=64, max_wait_s=10.0, latency_budget_s=10.0)
    policy.observe(0, 0.0)
    policy.observe(1_000_000, 1.0)  # a high arrival rate: batches of up to 64, so windows are pending
    transport = InMemoryTransport()
    app = make_app(
        old,
        ListSource(messages),
        transport,
        engine=ScoringEngine(old, batch_size=64),
        policy=policy,
        model_updates=_OneSwap(new),
    )

    stats = app.run()

    assert stats.model_swaps == 1
    events = [json.loads(p.payload) for p in transport.published if p.topic.endswith("anomalies")]
    assert {e["model_version"] for e in events} == {"OLD", "NEW"}
    old_events = [e for e in events if e["model_version"] == "OLD"]
    new_events = [e for e in events if e["model_version"] == "NEW"]
    # Every OLD window precedes every NEW one: the old event ends before the new one starts.
    assert max(e["end"] for e in old_events) < min(e["start"] for e in new_events)


def test_a_replay_row_that_is_not_utf8_is_rejected_and_the_replay_goes_on(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"timestamp,value\n1700000000,50\n1700000001,\xff\xfe\n1700000002,51\n")
    source = FileReplaySource(path, stream="s")
    parser = MessageParser(("value",))

    first, bad, third = (source.poll(0.0, parser) for _ in range(3))

    assert first is not None
    assert first.error is None
    assert bad is not None
    assert bad.error is not None
    assert bad.error.kind == NOT_UTF8
    assert third is not None
    assert third.error is None
    assert third.samples[0].values == (51.0,)


def test_a_replay_file_whose_header_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xfftimestamp,value\n1700000000,50\n")
    with pytest.raises(SourceError, match="UTF-8 CSV header"):
        FileReplaySource(path, stream="s")
