"""Segment bookkeeping of micro-batches: the fast paths must decide exactly what the per-window ones did."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.app import DetectorApp
from greengrass_components.anomaly_detector.batch import ScoredBatch
from greengrass_components.anomaly_detector.events import AnomalyEvent, EventBuilder
from greengrass_components.anomaly_detector.forwarder import Forwarder
from greengrass_components.anomaly_detector.messages import Sample, SampleBlock
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.scoring import ScoringEngine
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.stats import SCORE_EDGES, Distributions
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .helpers import T0, ListSource, series


def _ids() -> EventBuilder:
    counter = itertools.count()
    return EventBuilder(thing_name="gw-01", burst=1000, id_factory=lambda: f"event-{next(counter)}")


def _mixed_batches(engine: ScoringEngine) -> list[ScoredBatch]:
    """Two batches mixing a block stream and interleaved single-sample streams, spikes across the cut."""
    a_values = np.array(series(n=90, spike_at=None), dtype=np.float32)
    for index in (20, 21, 22, 40, 59, 60, 61, 88):  # runs, a run across the batch cut at 60, the last row
        a_values[index] += 10.0
    b_values = series(n=90, spike_at=None)
    for index in (15, 16, 59, 60, 70):
        b_values[index] += 10.0
    batches: list[ScoredBatch] = []
    for lo, hi in ((0, 60), (60, 90)):
        stamps = T0 + 60.0 * np.arange(lo, hi, dtype=np.float64)
        engine.add_block(SampleBlock("pump-a", stamps, a_values[lo:hi, None]), arrived_at=1.0)
        for i in range(lo, hi):
            engine.add(Sample("pump-b", T0 + 60.0 * i, (b_values[i],)), arrived_at=2.0)
            engine.add(Sample("pump-c", T0 + 60.0 * i, (50.0,)), arrived_at=3.0)
        batch = engine.flush()
        assert batch is not None
        batches.append(batch)
    return batches


def _app(engine: ScoringEngine, spool: Spool) -> DetectorApp:
    return DetectorApp(
        engine=engine,
        source=ListSource([]),
        spool=spool,
        forwarder=Forwarder(spool, InMemoryTransport()),
        events=_ids(),
        thing_name="gw-01",
        anomaly_topic="edge/gw-01/anomalies",
        health_topic="edge/gw-01/health",
    )


def test_events_from_segments_equal_offering_every_window(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=16)
    batches = _mixed_batches(engine)
    # One segment per block, one per single sample that completed a window (from row 7: window 8).
    assert [len(b.segments) for b in batches] == [1 + 2 * 53, 1 + 2 * 30]
    channels = engine.metadata.channels
    reference_builder = _ids()
    reference: list[AnomalyEvent] = []
    for batch in batches:
        for decision in batch.decisions():
            reference += reference_builder.offer(decision, channels)
    reference += reference_builder.close_all(channels)

    spool = Spool(":memory:")
    app = _app(engine, spool)
    for batch in batches:
        app._consume(batch, now=0.0)  # the batch path under test, no source loop
    app._spool_events(app._events.close_all(channels))

    stored = [json.loads(event.payload) for event in spool.peek(1000)]
    assert stored == [event.to_dict() for event in reference]
    # The data has events in all three shapes: a run inside a block, one across the batch cut, singles.
    # Runs inside a block (rows 20-22: 8 windows while the spikes sit in the window mean), across the
    # batch cut for the block (59-61) and for singles (59-60), a single row, and the last row (88), which
    # is closed only by close_all.
    assert [(e["stream"], e["windows"]) for e in stored] == [
        ("pump-a", 8), ("pump-a", 1), ("pump-b", 2), ("pump-a", 8),
        ("pump-a", 1), ("pump-b", 2), ("pump-b", 1),
    ]  # fmt: skip
    assert app.stats.anomalous_windows == sum(int(b.anomalous().sum()) for b in batches)


def test_batch_views_per_window_match_segments(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=16)
    first, _ = _mixed_batches(engine)
    streams, stamps, arrived = first.streams, first.timestamps, first.arrived_at
    assert len(streams) == len(stamps) == arrived.shape[0] == len(first)
    # The block completes windows from row 7 (window 8): 53 windows, then the singles interleave.
    assert streams[:53] == ["pump-a"] * 53
    assert stamps[:53] == pytest.approx((T0 + 60.0 * np.arange(7, 60)).tolist())
    assert set(arrived[:53]) == {1.0}
    decisions = first.decisions()
    assert [d.stream for d in decisions] == streams
    assert [d.timestamp for d in decisions] == stamps
    assert first.segment_of(52).stream == "pump-a"
    assert first.segment_of(53).stream in {"pump-b", "pump-c"}
    with pytest.raises(IndexError, match="window 999 of a batch of"):
        first.segment_of(999)


def test_distributions_match_numpy_over_several_batches() -> None:
    rng = np.random.default_rng(7)
    distributions = Distributions(("a", "b", "c"))
    all_scores: list[np.ndarray] = []
    all_inputs: list[np.ndarray] = []
    for n in (512, 3, 1, 200):
        scores = rng.gamma(2.0, 1.5, size=n).astype(np.float32)
        # Large offsets: float32 inputs summed in float64 must keep their spread.
        inputs = (1e6 + rng.normal(0.0, 2.0, size=(n, 3))).astype(np.float32)
        distributions.add(scores, inputs, threshold=2.0)
        all_scores.append(scores)
        all_inputs.append(inputs)
    distributions.add(np.empty(0, dtype=np.float32), np.empty((0, 3), dtype=np.float32), threshold=2.0)
    scores64 = np.concatenate(all_scores).astype(np.float64)
    inputs64 = np.concatenate(all_inputs).astype(np.float64)

    summary = distributions.summary()

    assert summary["windows"] == scores64.size == 716
    assert summary["score"] == pytest.approx(
        {"mean": scores64.mean(), "std": scores64.std(), "min": scores64.min(), "max": scores64.max()},
        rel=1e-5,
    )
    for index, channel in enumerate(("a", "b", "c")):
        column = inputs64[:, index]
        got = summary["inputs"][channel]
        # The heartbeat rounds to 6 significant digits.
        assert got["mean"] == pytest.approx(column.mean(), rel=6e-6)
        assert got["std"] == pytest.approx(column.std(), rel=1e-3)
        assert (got["min"], got["max"]) == pytest.approx((column.min(), column.max()), rel=6e-6)
    expected = np.bincount(
        np.searchsorted(np.asarray(SCORE_EDGES) * 2.0, scores64, side="right"), minlength=len(SCORE_EDGES) + 1
    )
    assert summary["score_histogram"]["counts"] == expected.tolist()


def test_histogram_edges_follow_a_threshold_change() -> None:
    distributions = Distributions(("value",))
    scores = np.array([0.9, 1.1, 3.0], dtype=np.float32)
    distributions.add(scores, np.zeros((3, 1), dtype=np.float32), threshold=1.0)
    distributions.add(scores, np.zeros((3, 1), dtype=np.float32), threshold=4.0)
    counts = distributions.summary()["score_histogram"]["counts"]
    # Threshold 1: 0.9 -> [0.75, 1), 1.1 -> [1, 1.5), 3.0 -> [2, 4). Threshold 4: 0.225 -> [0, 0.25),
    # 0.275 -> [0.25, 0.5), 0.75 -> [0.75, 1).
    edges = list(SCORE_EDGES)
    expected = [0] * (len(edges) + 1)
    for bin_of in (0.75, 1.0, 2.0, 0.0, 0.25, 0.75):
        expected[edges.index(bin_of) + 1] += 1
    assert counts == expected
