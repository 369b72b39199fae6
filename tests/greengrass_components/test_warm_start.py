"""A swapped-in model's post-processing starts warm: the stream's recent rows are replayed through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.batch import Segment
from greengrass_components.anomaly_detector.decision_rule import DecisionRule
from greengrass_components.anomaly_detector.messages import Sample, SampleBlock
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.recent import RecentRows
from greengrass_components.anomaly_detector.scoring import ScoringEngine

from .conftest import ModelFactory
from .helpers import T0

SETTINGS = {
    "method": "likelihood", "short_window": 5, "long_window": 300, "warmup": 50, "log_scores": False,
    "min_std": 0.05, "suppress_level": 0.5, "suppress_rows": 40, "suppress_factor": 0.0,
}  # fmt: skip
W = 8  # the test models' window


def _values(n: int, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = 50.0 + np.sin(np.arange(n) / 7.0) + rng.normal(0.0, 0.2, n)
    values[[i for i in (150, 420, 610) if i < n]] += 6.0
    return values.astype(np.float32)[:, None]


def _block(values: np.ndarray, lo: int, hi: int, stream: str = "pump-1") -> SampleBlock:
    return SampleBlock(stream, T0 + 60.0 * np.arange(lo, hi, dtype=np.float64), values[lo:hi])


def _model(make_model: ModelFactory, version: str, scale: float = 1.0) -> Path:
    metadata = {"edge_postprocess": json.dumps(SETTINGS), "model_version": version}
    return make_model(metadata=metadata, scale=scale)


def test_recent_rows_keep_the_newest_in_order() -> None:
    ring = RecentRows(5, 2)
    assert ring.rows().shape == (0, 2)
    ring.extend(np.arange(6, dtype=np.float32).reshape(3, 2))  # rows 0..2
    ring.extend(np.arange(6, 12, dtype=np.float32).reshape(3, 2))  # rows 3..5: wraps
    assert ring.rows()[:, 0].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    ring.extend(np.arange(100, 120, dtype=np.float32).reshape(10, 2))  # more than the capacity
    assert ring.rows()[:, 0].tolist() == [110.0, 112.0, 114.0, 116.0, 118.0]
    assert ring.count == ring.capacity == 5
    with pytest.raises(ValueError, match="capacity and channels must be >= 1"):
        RecentRows(0, 1)


@pytest.mark.parametrize("singles", [False, True], ids=["block-stream", "single-sample-stream"])
def test_swap_replays_recent_rows_into_the_new_post_processing(
    make_model: ModelFactory, singles: bool
) -> None:
    values = _values(900)
    old = load_model(_model(make_model, "old"))
    new = load_model(_model(make_model, "new", scale=2.0))  # other units: state must come from new scores
    engine = ScoringEngine(old, batch_size=10_000, warm_rows=400)

    def feed(lo: int, hi: int) -> None:
        if singles:  # one sample per message: the stream stays on the per-window post-processing
            for i in range(lo, hi):
                engine.add(Sample("pump-1", T0 + 60.0 * i, (float(values[i, 0]),)))
        else:
            engine.add_block(_block(values, lo, hi))

    for lo in range(0, 600, 200):
        feed(lo, lo + 200)
        assert engine.flush() is not None
    engine.swap_model(new)

    # The new rule saw the last 400 rows (the newest sample of each old window) as 393 windows.
    assert engine.last_warm_windows == 400 - W + 1
    feed(600, 900)
    batch = engine.flush()
    assert batch is not None
    assert batch.post_scores is not None
    # Reference: a fresh rule for the new model fed exactly those replayed windows (scored in one run, as
    # the swap does), then the new ones, on the same post-processing path as the stream's.
    rows = values[200:600]
    replay = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(rows[:, 0], W)[:, :, None])
    reference = DecisionRule.for_model(new)

    def segments(n: int) -> list[Segment]:
        if singles:
            return [Segment("pump-1", i, (0.0,), 0.0) for i in range(n)]
        return [Segment("pump-1", 0, np.zeros(n), 0.0)]

    reference.decide(segments(len(replay)), new.score(replay), replay)
    _, expected = reference.decide(segments(len(batch)), new.score(batch.windows), batch.windows)
    assert expected is not None
    assert batch.post_scores == pytest.approx(expected, abs=1e-9)
    # Warm: the warm-up (50 rows) is long past, so the first rows after the swap already score.
    assert batch.post_scores[:50].max() > 0.0


def test_without_warm_start_the_new_model_starts_cold(make_model: ModelFactory) -> None:
    values = _values(900)
    engine = ScoringEngine(load_model(_model(make_model, "old")), batch_size=10_000, warm_rows=0)
    engine.add_block(_block(values, 0, 600))
    engine.flush()
    engine.swap_model(load_model(_model(make_model, "new")))
    assert engine.last_warm_windows == 0
    engine.add_block(_block(values, 600, 900))
    batch = engine.flush()
    assert batch is not None
    assert batch.post_scores is not None
    assert batch.post_scores[:50].tolist() == [0.0] * 50  # the warm-up again


def test_rows_are_kept_within_the_budget_and_only_for_post_processing(
    make_model: ModelFactory, model_path: Path
) -> None:
    raw_rule = DecisionRule.for_model(load_model(model_path), warm_rows=500)
    assert raw_rule.warm_rows == 0  # nothing to warm without post-processing
    rule = DecisionRule.for_model(load_model(_model(make_model, "m")), warm_rows=40_000)
    windows = np.zeros((3, W, 1), dtype=np.float32)
    for stream in ("a", "b", "c"):
        rule.decide([Segment(stream, 0, np.zeros(3), 0.0)], np.zeros(3, dtype=np.float32), windows)
    # 40,000 rows each: a third stream would exceed the 100,000-row budget, so it starts cold later.
    assert sorted(rule._recent) == ["a", "b"]
    with pytest.raises(ValueError, match="warm_rows must be >= 0"):
        DecisionRule(1.0, None, warm_rows=-1)


def test_a_model_with_other_channels_is_not_warmed(make_model: ModelFactory) -> None:
    values = _values(300)
    engine = ScoringEngine(load_model(_model(make_model, "old")), batch_size=10_000, warm_rows=200)
    engine.add_block(_block(values, 0, 300))
    engine.flush()
    two = make_model(metadata={"edge_postprocess": json.dumps(SETTINGS)}, channels=("a", "b"))
    engine.swap_model(load_model(two))
    assert engine.last_warm_windows == 0
