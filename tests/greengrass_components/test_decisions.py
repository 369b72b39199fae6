"""Decisions in the deployed path: raw ``score > threshold``, or the model's ``edge_postprocess``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.batch import Decision
from greengrass_components.anomaly_detector.errors import ModelError
from greengrass_components.anomaly_detector.events import EventBuilder
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.postprocess import PostprocessConfig, Postprocessor
from greengrass_components.anomaly_detector.scoring import ScoringEngine
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .conftest import ModelFactory
from .helpers import ListSource, samples, series
from .test_app import make_app

# Small windows so that a 60-sample test stream gets past warm-up and has a post-processed alarm.
RATIO = {"method": "ratio", "short_window": 3, "warmup": 2, "log_scores": False}
LIKELIHOOD = {"method": "likelihood", "short_window": 2, "long_window": 30, "warmup": 10, "min_std": 0.05}


def postprocessed(make_model: ModelFactory, settings: dict[str, object], **kwargs: object) -> Path:
    return make_model(metadata={"edge_postprocess": json.dumps(settings)}, **kwargs)


def spiky(n: int = 60) -> list[float]:
    values = series(n=n, spike_at=None)
    for index in (25, 45):
        values[index] += 10.0
    return values


@pytest.mark.parametrize("settings", [RATIO, LIKELIHOOD], ids=["ratio", "likelihood"])
def test_engine_decisions_are_the_postprocessor_fed_every_window_in_order(
    make_model: ModelFactory, settings: dict[str, object]
) -> None:
    model = load_model(postprocessed(make_model, settings))
    # Two interleaved streams, small batches: per-stream state must follow each stream's own order.
    a, b = samples(spiky(), stream="a"), samples(series(n=60, spike_at=30), stream="b")
    interleaved = [s for pair in zip(a, b, strict=True) for s in pair]
    decisions = ScoringEngine(model, batch_size=5).process(interleaved)

    expected = Postprocessor(PostprocessConfig(**settings), model.metadata.threshold)  # type: ignore[arg-type]
    for d in decisions:
        post = expected.update(d.stream, d.score)
        assert d.post_score == post
        assert d.is_anomaly is expected.is_anomaly(post)
        assert d.decision_level == 0.5
    assert any(d.is_anomaly for d in decisions)
    # The rule is not the raw one: some decisions differ from score > threshold.
    assert any(d.is_anomaly != (d.score > d.threshold) for d in decisions)


def test_without_edge_postprocess_decisions_stay_raw(model_path: Path) -> None:
    decisions = ScoringEngine(load_model(model_path), batch_size=4).process(samples(spiky()))
    assert all(d.post_score is None and d.decision_level is None for d in decisions)
    assert [d.is_anomaly for d in decisions] == [d.score > d.threshold for d in decisions]
    assert sum(d.is_anomaly for d in decisions) == 2


def test_value_checks_get_the_windows_newest_sample(make_model: ModelFactory) -> None:
    settings = {"method": "ratio", "warmup": 0, "spatial_tolerance": 0.1}
    model = load_model(postprocessed(make_model, settings))
    values = series(n=40, spike_at=None)
    values[30] = 40.0  # far below anything seen: the spatial check alone sets the score to 1
    decisions = ScoringEngine(model, batch_size=7).process(samples(values))

    expected = Postprocessor(PostprocessConfig(**settings), model.metadata.threshold)  # type: ignore[arg-type]
    posts = [expected.update(d.stream, d.score, [float(d.window[-1][0])]) for d in decisions]
    assert [d.post_score for d in decisions] == posts
    assert decisions[30 - 7].post_score == 1.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('{"method": "median"}', "edge_postprocess method must be one of"),
        ('{"short_window": "ten"}', "edge_postprocess short_window must be int, got str"),
        ('{"bogus": 1}', r"edge_postprocess has unknown keys: \['bogus'\]"),
        ("[1, 2]", "edge_postprocess must be a JSON object"),
    ],
)
def test_model_with_bad_edge_postprocess_is_refused_at_load(
    make_model: ModelFactory, settings: str, message: str
) -> None:
    path = make_model(metadata={"edge_postprocess": settings})
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_model_swap_starts_a_fresh_postprocessor(make_model: ModelFactory) -> None:
    settings = {**RATIO, "warmup": 5}
    engine = ScoringEngine(load_model(postprocessed(make_model, settings)), batch_size=4)
    before = engine.process(samples(series(n=30, spike_at=None)))
    assert before[-1].post_score is not None
    assert before[-1].post_score > 0.0
    old_rule = engine.rule

    engine.swap_model(load_model(postprocessed(make_model, settings, scale=2.0)))
    assert engine.rule is not old_rule
    later = samples(series(n=40, spike_at=None))[30:]
    after = engine.process(later)
    # Same window shape: windows are kept (a decision per sample at once), but warm-up starts over.
    assert len(after) == 10
    assert [d.post_score for d in after[:5]] == [0.0] * 5
    assert all(d.post_score is not None and d.post_score > 0.0 for d in after[5:])

    engine.swap_model(load_model(make_model()))  # no edge_postprocess: back to raw decisions
    assert engine.rule.postprocess is None
    assert engine.process(samples(series(n=50, spike_at=None))[40:])[0].post_score is None


def decision(ts: float, score: float, post: float, flag: bool) -> Decision:
    window = np.full((8, 1), ts, dtype=np.float32)
    return Decision("s", ts, score, 3.0, flag, "v1", window, post_score=post, decision_level=0.5)


def test_event_peak_is_the_highest_postprocessed_score_and_carries_both_scores() -> None:
    builder = EventBuilder(thing_name="gw", id_factory=lambda: "e1")
    offers = [
        decision(100.0, score=9.0, post=0.6, flag=True),
        decision(160.0, score=4.0, post=0.9, flag=True),  # lower raw, higher post-processed: the peak
        decision(220.0, score=1.0, post=0.1, flag=False),
    ]
    events = [e for d in offers for e in builder.offer(d, ("value",))]

    assert len(events) == 1
    body = events[0].to_dict()
    assert body["score"] == body["peak_score"] == 4.0
    assert body["post_score"] == 0.9
    assert body["decision_level"] == 0.5
    assert body["threshold"] == 3.0
    assert body["windows"] == 2
    assert body["values"] == [[160.0]] * 8


def test_app_sends_events_decided_by_postprocessing(make_model: ModelFactory) -> None:
    model = load_model(postprocessed(make_model, RATIO))
    transport = InMemoryTransport()
    app = make_app(model, ListSource(samples(spiky())), transport)

    stats = app.run()

    expected = [d for d in ScoringEngine(model).process(samples(spiky())) if d.is_anomaly]
    assert stats.anomalous_windows == len(expected) > 0
    bodies = [json.loads(p.payload) for p in transport.published]
    assert bodies, "no event"
    assert all(b["decision_level"] == 0.5 and b["post_score"] >= 0.5 for b in bodies)
    assert sum(b["windows"] for b in bodies) == len(expected)
