import math

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import ModelError
from greengrass_components.anomaly_detector.postprocess import (
    METADATA_KEY,
    PostprocessConfig,
    Postprocessor,
    StreamPostprocessor,
    log10_tail,
)


def run(config: PostprocessConfig, raw: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    state = StreamPostprocessor(config, threshold)
    return np.array([state.update(float(r)) for r in raw])


def noisy(n: int, seed: int = 0) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(1.0, 0.3, n))


def test_scores_are_causal_later_raw_scores_never_change_earlier_outputs():
    config = PostprocessConfig(
        short_window=5, long_window=200, warmup=10, suppress_rows=20, suppress_level=0.5
    )
    raw = noisy(500)
    altered = raw.copy()
    altered[300:] = np.random.default_rng(9).uniform(0, 100, 200)

    first, second = run(config, raw), run(config, altered)

    np.testing.assert_array_equal(first[:300], second[:300])
    assert not np.array_equal(first[300:], second[300:])


@pytest.mark.parametrize("method", ["likelihood", "ratio"])
def test_scores_stay_in_unit_interval_even_for_extreme_raw_scores(method):
    raw = np.concatenate([noisy(300), [1e30, 0.0, 1e-30, 5e5], noisy(50, seed=1)])
    scores = run(PostprocessConfig(method=method, warmup=0), raw)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert np.all(np.isfinite(scores))


def test_likelihood_flags_a_burst_after_steady_noise_and_not_the_noise():
    raw = np.concatenate([noisy(400), np.full(10, 8.0)])
    scores = run(PostprocessConfig(short_window=5, long_window=1000, warmup=50), raw)
    assert scores[50:400].max() < 0.5
    assert scores[-1] > 0.5


def test_warmup_rows_score_zero():
    raw = np.concatenate([np.full(20, 50.0), noisy(30)])
    scores = run(PostprocessConfig(method="ratio", warmup=20), raw)
    assert np.all(scores[:20] == 0.0)
    assert scores[20] > 0.0


def test_ratio_maps_the_calibrated_threshold_to_one_half():
    scores = run(
        PostprocessConfig(method="ratio", short_window=1, warmup=0, log_scores=False), np.array([3.0, 0.0])
    )
    assert scores.tolist() == [0.5, 0.0]


def test_suppression_damps_scores_after_an_alarm():
    config = PostprocessConfig(
        method="ratio",
        short_window=1,
        warmup=0,
        log_scores=False,
        suppress_level=0.5,
        suppress_rows=3,
        suppress_factor=0.0,
    )
    scores = run(config, np.array([9.0, 9.0, 9.0, 9.0, 9.0]))
    assert scores.tolist() == [0.75, 0.0, 0.0, 0.0, 0.75]


def test_streams_keep_separate_state():
    config = PostprocessConfig(short_window=3, long_window=100, warmup=5)
    a, b = noisy(200, seed=1), noisy(200, seed=2) * 5
    shared = Postprocessor(config, threshold=3.0)
    interleaved_a, interleaved_b = [], []
    for x, y in zip(a, b, strict=True):
        interleaved_a.append(shared.update("a", float(x)))
        interleaved_b.append(shared.update("b", float(y)))
    np.testing.assert_array_equal(interleaved_a, run(config, a))
    np.testing.assert_array_equal(interleaved_b, run(config, b))
    assert shared.streams == ("a", "b")
    assert shared.is_anomaly(0.5)
    assert not shared.is_anomaly(0.49)


def test_log10_tail_is_exact_near_zero_and_continuous_in_the_far_tail():
    assert log10_tail(0.0) == pytest.approx(math.log10(2.0))
    assert log10_tail(3.0) == pytest.approx(-math.log10(0.0013498980316301), rel=1e-9)
    assert log10_tail(29.999) == pytest.approx(log10_tail(30.001), rel=1e-3)
    assert log10_tail(60.0) > log10_tail(40.0)


def test_config_round_trips_through_metadata():
    config = PostprocessConfig(method="ratio", short_window=7, min_std=0.5)
    assert PostprocessConfig.from_metadata({METADATA_KEY: config.to_json()}) == config
    assert PostprocessConfig.from_metadata({}) == PostprocessConfig()
    assert PostprocessConfig.from_json('{"half_log10": 4}').half_log10 == 4.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "edge_postprocess must be a JSON object"),
        ("{", "edge_postprocess is not JSON"),
        ('{"colour": 1}', "edge_postprocess has unknown keys: ['colour']"),
        ('{"short_window": "10"}', "edge_postprocess short_window must be int, got str"),
        ('{"log_scores": 1}', "edge_postprocess log_scores must be bool, got int"),
        ('{"method": "magic"}', "edge_postprocess method must be one of ['likelihood', 'ratio']"),
        ('{"long_window": 0}', "edge_postprocess long_window must be >= 1, got 0"),
        ('{"suppress_factor": 2.0}', "edge_postprocess suppress_factor must be in [0, 1], got 2.0"),
    ],
)
def test_bad_metadata_is_refused_with_a_reason(text, message):
    with pytest.raises(ModelError) as err:
        PostprocessConfig.from_json(text)
    assert str(err.value).startswith(message)
