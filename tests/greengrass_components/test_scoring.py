from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import MessageError
from greengrass_components.anomaly_detector.messages import Sample, SampleBlock
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.scoring import BatchPolicy, ScoringEngine

from .conftest import ModelFactory
from .helpers import SPIKE_INDEX, T0, counting, samples, series


def test_spike_is_the_only_anomalous_window(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=4)
    decisions = engine.process(samples(series()))

    # window_length 8: the first full window ends at sample 7, one decision per sample after that.
    assert [d.timestamp for d in decisions] == [T0 + i * 60 for i in range(7, 40)]
    anomalous = [d for d in decisions if d.is_anomaly]
    assert [d.timestamp for d in anomalous] == [T0 + SPIKE_INDEX * 60]
    spike = anomalous[0]
    assert spike.score > spike.threshold == 3.0
    # causal: the window that flagged the spike ends with the spike itself
    assert spike.window[-1, 0] == pytest.approx(series()[SPIKE_INDEX])
    assert spike.window.shape == (8, 1)
    assert spike.model_version == "20261124T201500Z-test0001"
    assert max(d.score for d in decisions if not d.is_anomaly) < 3.0


def test_score_equal_to_threshold_is_not_anomalous(make_model: ModelFactory) -> None:
    engine = ScoringEngine(load_model(make_model(metadata={"threshold": "7.0"})), batch_size=1)
    values = [0.0] * 7 + [8.0]  # |8 - 1| = 7.0 exactly
    decisions = engine.process(samples(values))
    assert [d.score for d in decisions] == [7.0]
    assert decisions[0].is_anomaly is False


def test_one_session_run_per_micro_batch(model_path: Path) -> None:
    model, session = counting(load_model(model_path))
    engine = ScoringEngine(model, batch_size=10)
    decisions = engine.process(samples(series(n=40)))  # 33 full windows

    assert session.batch_sizes == [10, 10, 10, 3]
    assert len(decisions) == 33
    assert engine.pending_count == 0
    assert engine.windows_scored == 33
    assert engine.batches_run == 4
    assert engine.flush() is None
    assert len(session.batch_sizes) == 4


def test_streams_are_windowed_independently(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=100)
    a = samples(series(spike_at=None), stream="a")
    b = samples(series(spike_at=12), stream="b")
    interleaved = [s for pair in zip(a, b, strict=True) for s in pair]
    anomalous = [(d.stream, d.timestamp) for d in engine.process(interleaved) if d.is_anomaly]
    assert anomalous == [("b", T0 + 12 * 60)]


def test_swap_model_scores_queued_windows_with_old_model_then_uses_new(make_model: ModelFactory) -> None:
    old = load_model(make_model(metadata={"model_version": "old"}))
    new = load_model(make_model(metadata={"model_version": "new", "threshold": "0.1"}))
    engine = ScoringEngine(old, batch_size=100)
    for sample in samples(series(n=10, spike_at=None)):
        engine.add(sample)
    flushed = engine.swap_model(new)
    assert flushed is not None
    assert {d.model_version for d in flushed.decisions()} == {"old"}
    assert len(flushed) == 3
    # same window shape: no warm-up gap, the next sample is scored immediately by the new model
    engine.add(Sample("pump-1", T0 + 10 * 60, (60.0,)))
    batch = engine.flush()
    assert batch is not None
    (decision,) = batch.decisions()
    assert decision.model_version == "new"
    assert decision.is_anomaly


def test_swap_to_different_window_shape_resets_windows(make_model: ModelFactory) -> None:
    engine = ScoringEngine(load_model(make_model()), batch_size=100)
    engine.process(samples(series(n=10, spike_at=None)))
    engine.swap_model(load_model(make_model(window_length=4)))
    assert engine.process(samples([1.0, 2.0, 3.0], step_s=1000)) == []  # 4-sample window not full yet
    engine.add(Sample("pump-1", T0 + 10_000, (4.0,)))
    batch = engine.flush()
    assert batch is not None
    (decision,) = batch.decisions()
    assert decision.window.shape == (4, 1)
    assert np.allclose(decision.window[:, 0], [1, 2, 3, 4])


def test_batch_size_must_be_positive(model_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ScoringEngine(load_model(model_path), batch_size=0)


def test_block_path_gives_the_same_windows_and_scores_as_single_samples(model_path: Path) -> None:
    values = series(n=40)
    singles = ScoringEngine(load_model(model_path), batch_size=1000).process(samples(values))
    engine = ScoringEngine(load_model(model_path), batch_size=1000)
    stamps = np.array([T0 + i * 60 for i in range(40)])
    column = np.array(values, dtype=np.float32).reshape(-1, 1)
    # three blocks, the first shorter than a window: the ring carries state across blocks
    assert engine.add_block(SampleBlock("pump-1", stamps[:5], column[:5])) == 0
    assert engine.add_block(SampleBlock("pump-1", stamps[5:20], column[5:20])) == 13
    assert engine.add_block(SampleBlock("pump-1", stamps[20:], column[20:])) == 20
    batch = engine.flush()
    assert batch is not None
    assert batch.timestamps == [d.timestamp for d in singles]
    assert np.allclose(batch.scores, [d.score for d in singles])
    assert np.allclose(batch.windows, np.stack([d.window for d in singles]))


def test_block_that_goes_back_in_time_is_refused_whole(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=10)
    stamps = np.array([T0, T0 + 2, T0 + 1])
    with pytest.raises(MessageError, match="not strictly increasing") as refused:
        engine.add_block(SampleBlock("s", stamps, np.ones((3, 1), dtype=np.float32)))
    assert refused.value.kind == "out_of_order"
    assert engine.stream_count == 0


def test_batch_policy_target_follows_arrival_rate() -> None:
    policy = BatchPolicy(max_batch=256, max_wait_s=0.05, latency_budget_s=0.001, rate_period_s=0.1)
    assert policy.target == 1  # nothing measured yet: score at once
    for step in range(1, 11):
        policy.observe(1000, step * 0.1)  # 10,000 windows/s
    assert policy.rate == pytest.approx(10_000, rel=0.05)
    assert policy.target == 10
    assert not policy.due(9, oldest_at=1.0, now=1.01)
    assert policy.due(10, oldest_at=1.0, now=1.01)
    assert policy.due(1, oldest_at=1.0, now=1.05)  # bounded wait
    assert policy.wait_s(oldest_at=1.0, now=1.02, idle_s=0.5) == pytest.approx(0.03)
    for step in range(11, 30):
        policy.observe(1_000_000, step * 0.1)
    assert policy.target == 256  # capped
