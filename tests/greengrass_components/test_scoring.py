from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.messages import Sample
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.scoring import ScoringEngine

from .conftest import ModelFactory
from .helpers import SPIKE_INDEX, T0, counting, samples, series


def test_spike_is_the_only_anomalous_window(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=4)
    decisions = engine.process(samples(series())) + engine.flush()

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

    assert session.batch_sizes == [10, 10, 10]
    assert len(decisions) == 30
    assert engine.pending_count == 3
    assert len(engine.flush()) == 3
    assert session.batch_sizes == [10, 10, 10, 3]
    assert engine.windows_scored == 33
    assert engine.batches_run == 4
    assert engine.flush() == []
    assert len(session.batch_sizes) == 4


def test_streams_are_windowed_independently(model_path: Path) -> None:
    engine = ScoringEngine(load_model(model_path), batch_size=100)
    a = samples(series(spike_at=None), stream="a")
    b = samples(series(spike_at=12), stream="b")
    interleaved = [s for pair in zip(a, b, strict=True) for s in pair]
    engine.process(interleaved)
    anomalous = [(d.stream, d.timestamp) for d in engine.flush() if d.is_anomaly]
    assert anomalous == [("b", T0 + 12 * 60)]


def test_swap_model_scores_queued_windows_with_old_model_then_uses_new(make_model: ModelFactory) -> None:
    old = load_model(make_model(metadata={"model_version": "old"}))
    new = load_model(make_model(metadata={"model_version": "new", "threshold": "0.1"}))
    engine = ScoringEngine(old, batch_size=100)
    engine.process(samples(series(n=10, spike_at=None)))
    flushed = engine.swap_model(new)
    assert {d.model_version for d in flushed} == {"old"}
    assert len(flushed) == 3
    # same window shape: no warm-up gap, the next sample is scored immediately by the new model
    engine.add(Sample("pump-1", T0 + 10 * 60, (60.0,)))
    (decision,) = engine.flush()
    assert decision.model_version == "new"
    assert decision.is_anomaly


def test_swap_to_different_window_shape_resets_windows(make_model: ModelFactory) -> None:
    engine = ScoringEngine(load_model(make_model()), batch_size=100)
    engine.process(samples(series(n=10, spike_at=None)))
    engine.swap_model(load_model(make_model(window_length=4)))
    engine.process(samples([1.0, 2.0, 3.0], step_s=1000))
    assert engine.pending_count == 0  # the new 4-sample window is not full yet
    engine.add(Sample("pump-1", T0 + 10_000, (4.0,)))
    (decision,) = engine.flush()
    assert decision.window.shape == (4, 1)
    assert np.allclose(decision.window[:, 0], [1, 2, 3, 4])


def test_batch_size_must_be_positive(model_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ScoringEngine(load_model(model_path), batch_size=0)
