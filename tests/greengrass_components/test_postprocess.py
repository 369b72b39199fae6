import json
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
from training.evaluate import NAB_POSTPROCESS


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


def _damped(rearm: float = 0.0, rows: int = 5) -> PostprocessConfig:
    return PostprocessConfig(
        method="ratio",
        short_window=1,
        warmup=0,
        log_scores=False,
        suppress_level=0.5,
        suppress_rows=rows,
        suppress_factor=0.0,
        suppress_rearm_ratio=rearm,
    )


def test_suppression_damps_scores_after_an_alarm():
    scores = run(_damped(rows=3), np.array([9.0, 9.0, 9.0, 9.0, 9.0]))
    assert scores.tolist() == [0.75, 0.0, 0.0, 0.0, 0.75]


def test_rearm_lets_a_far_larger_anomaly_through_the_damping_and_restarts_it():
    # A minor alarm (9), then inside its 5-row damping one 100x larger, twice.
    raw = np.array([9.0, 1.0, 900.0, 900.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0])
    off = run(_damped(0.0), raw)
    on = run(_damped(3.0), raw)
    assert np.flatnonzero(off >= 0.5).tolist() == [0, 9]  # without re-arming the 900s are silenced
    # The first 900 passes and restarts the damping (rows 3-7): the second is no larger than the new peak.
    assert np.flatnonzero(on >= 0.5).tolist() == [0, 2, 9]
    assert on[2] == pytest.approx(900.0 / 903.0)


def test_rearm_compares_with_the_peak_since_the_alarm_not_the_alarm_itself():
    # 20 (< 3 x 9) stays damped and becomes the peak, so 45 (> 3 x 9 but < 3 x 20) stays damped too.
    assert run(_damped(3.0), np.array([9.0, 20.0, 45.0, 1.0])).tolist()[1:] == [0.0, 0.0, 0.0]
    assert run(_damped(3.0), np.array([9.0, 20.0, 61.0, 1.0]))[2] == pytest.approx(61.0 / 64.0)


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
        ('{"long_fraction": 1.5}', "edge_postprocess long_fraction must be in [0, 1], got 1.5"),
        ('{"long_window_max": 0}', "edge_postprocess long_window_max must be >= 1, got 0"),
        ('{"suppress_rearm_ratio": 1.0}', "edge_postprocess suppress_rearm_ratio must be 0 (off) or >= 1.1"),
    ],
)
def test_bad_metadata_is_refused_with_a_reason(text, message):
    with pytest.raises(ModelError) as err:
        PostprocessConfig.from_json(text)
    assert str(err.value).startswith(message)


def recurring_bursts(n_bursts: int, period: int = 600) -> tuple[np.ndarray, list[int]]:
    raw = noisy(period * n_bursts + 100)
    starts = [period * (k + 1) for k in range(n_bursts)]
    for start in starts:
        raw[start : start + 10] = 8.0
    return raw, starts


def test_growing_history_remembers_recurring_bursts_a_fixed_window_forgets():
    raw, starts = recurring_bursts(5)
    fixed = PostprocessConfig(short_window=5, long_window=300, warmup=50)
    growing = PostprocessConfig(short_window=5, long_window=300, warmup=50, long_fraction=0.5)

    fixed_peaks = [run(fixed, raw)[s : s + 10].max() for s in starts]
    growing_peaks = [run(growing, raw)[s : s + 10].max() for s in starts]

    # The first burst is new to both (at row 600 both histories hold ~300 rows); a 300-row window has
    # forgotten every earlier burst by the next one.
    assert fixed_peaks[0] == pytest.approx(growing_peaks[0], abs=0.01)
    assert min(fixed_peaks) > 0.5
    # Half the rows seen (>= 600 by the second burst) keeps the previous burst in the reference.
    assert all(g < f - 0.05 for g, f in zip(growing_peaks[1:], fixed_peaks[1:], strict=True))


def test_growing_history_is_capped_and_causal():
    raw, _ = recurring_bursts(5)
    capped = PostprocessConfig(short_window=5, long_window=300, long_fraction=0.5, long_window_max=300)
    np.testing.assert_array_equal(
        run(capped, raw), run(PostprocessConfig(short_window=5, long_window=300), raw)
    )
    growing = PostprocessConfig(short_window=5, long_window=300, long_fraction=0.5)
    altered = raw.copy()
    altered[2000:] = 50.0
    np.testing.assert_array_equal(run(growing, raw)[:2000], run(growing, altered)[:2000])


def run_with_values(config: PostprocessConfig, raw: np.ndarray, values: np.ndarray) -> np.ndarray:
    state = StreamPostprocessor(config, 3.0)
    return np.array(
        [
            state.update(float(r), [float(v) for v in np.atleast_1d(row)])
            for r, row in zip(raw, values, strict=True)
        ]
    )


def daily(n: int, period: int = 48, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    return 10 * np.sin(2 * np.pi * t / period) + np.random.default_rng(seed).normal(0, 0.5, n)


def test_spatial_check_scores_one_when_a_value_leaves_the_range_seen_so_far():
    config = PostprocessConfig(short_window=5, long_window=200, warmup=20, spatial_tolerance=0.05)
    values = daily(300)
    values[250] = 10.0 + 0.2 * (values[:250].max() - values[:250].min())  # 20 % above the range
    scores = run_with_values(config, noisy(300), values)
    assert scores[250] == 1.0
    assert scores[60:250].max() < 1.0  # after the first cycle has spanned the range


def test_spatial_check_tolerates_a_value_just_past_the_range():
    config = PostprocessConfig(short_window=5, long_window=200, warmup=20, spatial_tolerance=0.05)
    values = daily(300)
    span = values[:250].max() - values[:250].min()
    values[250] = values[:250].max() + 0.04 * span
    assert run_with_values(config, noisy(300), values)[250] < 1.0


def test_value_checks_need_the_values_and_are_off_by_default():
    raw = noisy(300)
    config = PostprocessConfig(short_window=5, long_window=200, warmup=20, spatial_tolerance=0.05)
    values = np.full(300, 1.0)
    values[200] = 1e6
    without = run(config, raw)
    np.testing.assert_array_equal(
        without,
        run_with_values(PostprocessConfig(**{**config.__dict__, "spatial_tolerance": 0.0}), raw, values),
    )
    assert not PostprocessConfig().uses_values
    assert config.uses_values


def test_seasonal_likelihood_flags_a_missing_daily_cycle_the_raw_score_does_not_see():
    period = 48
    values = daily(20 * period)
    values[15 * period : 16 * period] = np.random.default_rng(3).normal(0, 0.5, period)  # the cycle stops
    raw = noisy(values.size)
    config = PostprocessConfig(
        short_window=5,
        long_window=2000,
        warmup=3 * period,
        log_scores=False,
        min_std=0.1,
        seasonal_lag=period,
        value_short_window=12,
        reference_window=2 * period,
    )
    scores = run_with_values(config, raw, values)
    plain = run(PostprocessConfig(**{**config.__dict__, "seasonal_lag": 0}), raw)
    assert scores[15 * period : 16 * period].max() > 0.5
    assert scores[3 * period : 15 * period].max() < 0.5
    assert plain[15 * period : 16 * period].max() < 0.5


def test_value_checks_are_causal_and_per_channel():
    config = PostprocessConfig(
        short_window=5,
        long_window=300,
        warmup=30,
        spatial_tolerance=0.05,
        seasonal_lag=24,
        value_short_window=6,
        reference_window=48,
        level_windows=(6,),
        variance_window=8,
    )
    values = np.column_stack([daily(400, period=24), daily(400, period=24, seed=1) * 1e6])
    altered = values.copy()
    altered[250:, 1] += 5e7
    raw = noisy(400)
    first, second = run_with_values(config, raw, values), run_with_values(config, raw, altered)
    np.testing.assert_array_equal(first[:250], second[:250])
    assert second[250] == 1.0
    assert first[250] < 1.0


def test_value_checks_refuse_a_sample_with_another_channel_count():
    state = StreamPostprocessor(PostprocessConfig(spatial_tolerance=0.05), 3.0)
    state.update(1.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="expected 2 values, got 1"):
        state.update(1.0, [1.0])
    assert state.seen == 1


def test_moments_stay_exact_for_large_offsets_over_a_long_stream():
    from greengrass_components.anomaly_detector.postprocess import _Moments

    moments = _Moments(50)
    data = 1e9 + np.random.default_rng(4).normal(0, 1.0, 5000)
    for x in data:
        moments.add(float(x))
    assert moments.mean() == pytest.approx(data[-50:].mean(), rel=1e-12)
    assert moments.std() == pytest.approx(data[-50:].std(), rel=1e-6)


def test_hold_keeps_the_alarm_up_for_hold_rows_after_the_last_alarm():
    config = PostprocessConfig(method="ratio", short_window=1, warmup=0, log_scores=False, hold_rows=2)
    scores = run(config, np.array([9.0, 0.0, 0.0, 0.0, 9.0, 0.0]))
    assert scores.tolist() == [0.75, 0.5, 0.5, 0.0, 0.75, 0.5]


def test_postprocessor_passes_the_newest_values_to_the_stream():
    config = PostprocessConfig(short_window=3, long_window=100, warmup=5, spatial_tolerance=0.05)
    shared = Postprocessor(config, threshold=3.0)
    outputs = [shared.update("a", 1.0, [float(v)]) for v in (0, 1, 0, 1, 0, 1, 0, 50)]
    assert outputs[-1] == 1.0


def test_value_check_settings_round_trip_and_refuse_bad_lists():
    config = PostprocessConfig(level_windows=(12, 48), seasonal_lag=288, reference_window=576, hold_rows=3)
    assert PostprocessConfig.from_metadata({METADATA_KEY: config.to_json()}) == config
    with pytest.raises(ModelError, match=r"level_windows must be a list of int, got \['12'\]"):
        PostprocessConfig.from_json('{"level_windows": ["12"]}')
    with pytest.raises(ModelError, match=r"level_windows must be in \[1, reference_window\), got 300"):
        PostprocessConfig(level_windows=(300,))
    with pytest.raises(
        ModelError, match="variance_window must be 0 \\(off\\) or in \\[2, reference_window\\)"
    ):
        PostprocessConfig(variance_window=1)
    with pytest.raises(ModelError, match="combine must be one of \\['max', 'union'\\]"):
        PostprocessConfig(combine="sum")
    with pytest.raises(ModelError, match=r"spatial_tolerance must be >= 0, got -0\.1"):
        PostprocessConfig(spatial_tolerance=-0.1)


def test_the_nab_setting_reports_a_far_larger_burst_inside_a_minor_alarms_damping():
    raw = noisy(3000, seed=7)
    raw[2000:2010] += 4.0  # a minor burst: alarms, then 400 rows of damping
    raw[2150:2160] += 400.0  # 100x larger, 150 rows later
    settings = json.loads(json.dumps(NAB_POSTPROCESS))
    on = run(PostprocessConfig(**settings), raw)
    off = run(PostprocessConfig(**{**settings, "suppress_rearm_ratio": 0.0}), raw)
    assert (on[2000:2010] >= 0.5).any()
    assert (off[2000:2010] >= 0.5).any()
    assert (on[2150:2160] >= 0.5).any()
    assert not (off[2010:2400] >= 0.5).any()


def test_rearm_needs_a_positive_peak():
    # Raw scores at or below 0 give the ratio nothing to scale: a damped row never re-arms then.
    config = PostprocessConfig(
        method="likelihood",
        short_window=1,
        long_window=10,
        warmup=0,
        log_scores=False,
        suppress_level=0.5,
        suppress_rows=5,
        suppress_factor=0.0,
        suppress_rearm_ratio=3.0,
    )

    def scores(base: float, alarm: float) -> list[float]:
        state = StreamPostprocessor(config, 3.0)
        return [state.update(v) for v in [base] * 20 + [alarm, 500.0]]

    negative, positive = scores(-5.0, -1.0), scores(1.0, 2.0)
    assert negative[20] >= 0.5
    assert positive[20] >= 0.5
    assert positive[21] >= 0.5  # 500 > 3 x 2: re-armed
    assert negative[21] == 0.0  # 500 > 3 x -1 too, but a peak of -1 has no scale: damped


def _record_config(**extra: object) -> PostprocessConfig:
    settings: dict[str, object] = {
        "method": "ratio", "short_window": 1, "warmup": 0, "log_scores": False,
        "record_window": 20, "record_history": 200, "record_min_history": 100, **extra,
    }  # fmt: skip
    return PostprocessConfig(**settings)  # type: ignore[arg-type]


def _record_scores(config: PostprocessConfig, values: np.ndarray) -> np.ndarray:
    # Raw scores far below the threshold: only the value checks can raise the score.
    state = StreamPostprocessor(config, 1e6)
    return np.array([state.update(0.0, [float(v)]) for v in values])


def test_record_flags_a_slow_drift_into_a_level_the_stream_left_long_ago():
    rng = np.random.default_rng(3)
    # Once at 0 (a short dip), then 300 rows around 10, then a slow decline to 3 and a long stay there.
    parts = [np.zeros(10), 10 + rng.normal(0, 0.5, 300), np.linspace(10, 3, 100), np.full(100, 3.0)]
    values = np.concatenate(parts)
    values = values + rng.normal(0, 0.2, values.size)
    record = _record_scores(_record_config(), values)
    spatial = _record_scores(_record_config(record_window=0, spatial_tolerance=0.05), values)
    assert not (spatial[20:] >= 0.5).any()  # never outside the range of everything seen (the dip)
    first = int(np.argmax(record >= 0.5))
    assert 310 < first < 410  # during the decline: its 20-row mean is below the last 200 rows' range
    assert not (record[:310] >= 0.5).any()


def test_record_needs_its_minimum_history_and_ignores_a_flat_line():
    flat = _record_scores(_record_config(), np.full(500, 7.0))
    assert not (flat >= 0.5).any()
    step = np.concatenate([np.full(110, 7.0), np.full(100, 8.0)])
    # The step's first 20-row mean (row 110) is above every earlier value, but row 119 is the first with
    # 100 rows of history; from row 130 on the history holds 8s too and the level is no record any more.
    scores = _record_scores(_record_config(), step)
    assert np.flatnonzero(scores >= 0.5).tolist() == list(range(119, 130))
    assert not (_record_scores(_record_config(record_min_history=200), step) >= 0.5).any()


def test_record_settings_are_checked():
    with pytest.raises(ModelError, match=r"record_min_history \(300\) must be <= record_history \(200\)"):
        _record_config(record_min_history=300)
    with pytest.raises(ModelError, match="record_window must be >= 0"):
        _record_config(record_window=-1)
    assert _record_config().uses_values
