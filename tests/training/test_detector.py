import numpy as np
import pytest

from tests.training.train_helpers import synthetic_channels
from training.data import sliding_windows
from training.detector import (
    DETECTOR_NAME,
    MIN_TRAINING_WINDOWS,
    DetectorConfig,
    ForecastResidualModel,
    channel_terms,
    fit,
    linear_form,
    reference_scores,
    score_windows,
)
from training.errors import ConfigError, TooFewRowsError


def hand_model() -> ForecastResidualModel:
    """window_length 3, one channel: forecast = previous sample, known scales."""
    return ForecastResidualModel(
        window_length=3,
        channels=("v",),
        center=np.array([100.0]),
        scale=np.array([10.0]),
        weights=np.array([[0.0], [1.0]]),
        bias=np.array([0.0]),
        residual_scale=np.array([0.5]),
        deviation_scale=np.array([1.0]),
        mean_weight=0.5,
        ridge_alpha=1e-3,
    )


def test_score_follows_the_documented_formula():
    # z = [0, 1, 3]; forecast 1 -> residual |3-1|/0.5 = 4; level 0.5 -> deviation |3-0.5|/1 = 2.5.
    scores = score_windows(hand_model(), np.array([[[100.0], [110.0], [130.0]]]))

    assert scores.tolist() == pytest.approx([4 + 0.5 * 2.5])


def test_fit_learns_a_forecaster_that_tracks_a_clean_signal():
    values = synthetic_channels(3000)
    model = fit([values], ["a", "b", "c"], DetectorConfig(window_length=16))

    windows = sliding_windows(values, 16)
    residual, deviation = channel_terms(model, windows)

    assert model.name == DETECTOR_NAME
    assert model.weights.shape == (15 * 3, 3)
    # Residuals are measured in units of their own training spread (1.4826 * MAD), so the median is ~0.67.
    assert np.median(residual, axis=0) == pytest.approx([0.6745] * 3, abs=0.05)
    assert np.median(deviation, axis=0) == pytest.approx([0.6745] * 3, abs=0.05)
    # The forecast beats "the next sample equals the window mean" by far on a smooth cycle.
    raw_residual = residual * model.residual_scale
    raw_deviation = deviation * model.deviation_scale
    assert np.mean(raw_residual[:, 0]) < 0.5 * np.mean(raw_deviation[:, 0])


def test_a_spike_scores_far_above_normal_windows():
    values = synthetic_channels(2000)
    model = fit([values[:1500]], ["a", "b", "c"], DetectorConfig(window_length=16))
    spiked = values[1500:].copy()
    spiked[200, 1] += 3000.0  # 10x channel b's amplitude, in its own (large) units

    scores = score_windows(model, sliding_windows(spiked, 16))

    assert scores[200 - 15] > 10 * np.quantile(scores, 0.99)


def test_normalisation_makes_scores_independent_of_units():
    values = synthetic_channels(1200)
    rescaled = values * np.array([1000.0, 0.001, 7.0]) + np.array([-50.0, 3.0, 1e4])
    config = DetectorConfig(window_length=8)

    # The float64 formula: float32 inputs (what score_windows and the edge use) cannot hold 1e4 + 0.05.
    original = reference_scores(fit([values], "abc", config), sliding_windows(values, 8))
    converted = reference_scores(fit([rescaled], "abc", config), sliding_windows(rescaled, 8))

    np.testing.assert_allclose(converted, original, rtol=1e-6)


def test_constant_channel_gives_finite_scores():
    values = np.column_stack([np.full(200, 5.0), np.sin(np.arange(200) / 5.0)])
    model = fit([values], ["flat", "wave"], DetectorConfig(window_length=8))

    scores = score_windows(model, sliding_windows(values, 8))

    assert model.scale[0] == 1.0
    assert np.isfinite(scores).all()


def test_windows_are_cut_per_segment():
    values = synthetic_channels(40)[:, :1]
    segments = [values[i : i + 4] for i in range(0, 40, 4)]
    config = DetectorConfig(window_length=5)

    # Ten 4-row files hold no 5-row window; joined they would hold 36.
    with pytest.raises(TooFewRowsError, match=r"^40 training rows give 0 windows"):
        fit(segments, ["a"], config)
    assert fit([values], ["a"], config).window_length == 5


def test_too_few_rows_error_says_what_is_needed():
    with pytest.raises(TooFewRowsError) as info:
        fit([np.zeros((40, 1))], ["v"], DetectorConfig(window_length=32))
    assert str(info.value) == (
        f"40 training rows give 9 windows of length 32; at least {MIN_TRAINING_WINDOWS} are needed "
        "(a file needs 51 rows)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_length": 1}, "window_length must be at least 2, got 1"),
        ({"ridge_alpha": 0.0}, "ridge_alpha must be > 0, got 0.0"),
        ({"mean_weight": -1.0}, "mean_weight must be >= 0, got -1.0"),
    ],
)
def test_detector_config_is_validated(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        DetectorConfig(**kwargs)


def test_score_windows_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"windows must be \[batch, 3, 1\], got shape \(2, 4, 1\)"):
        score_windows(hand_model(), np.zeros((2, 4, 1)))


def test_folded_float32_scores_equal_the_formula():
    values = synthetic_channels(1200)
    model = fit([values[:900]], ["a", "b", "c"], DetectorConfig(window_length=16))
    windows = sliding_windows(values, 16)

    folded = score_windows(model, windows)
    formula = reference_scores(model, windows.astype(np.float32))

    # Same inputs; the only difference left is float32 rounding of the folded products.
    np.testing.assert_allclose(folded, formula, rtol=1e-5, atol=1e-5)
    assert folded.max() > 3.0  # not a trivial all-zero comparison


@pytest.mark.parametrize(
    ("kwargs", "n_terms", "n_summed"),
    [
        ({}, 6, 6),  # residual + mean jump, 3 channels
        ({"mean_weight": 0.0}, 3, 3),  # a zero-weight term folds away
        ({"jump_lengths": (2, 4), "jump_weight": 0.5}, 12, 12),
        ({"jump_lengths": (2, 4), "jump_weight": 0.0}, 6, 6),
        ({"level_length": 4, "level_weight": 1.0}, 9, 6),  # level terms are maxed, not summed
    ],
)
def test_linear_form_has_one_column_per_active_term_and_channel(kwargs, n_terms, n_summed):
    values = synthetic_channels(300)
    model = fit([values], ["a", "b", "c"], DetectorConfig(window_length=8, **kwargs))

    form = linear_form(model)

    assert form.weights.shape == (8 * 3, n_terms)
    assert form.bias.shape == (n_terms,)
    assert form.n_summed == n_summed
    assert form.weights.dtype == form.bias.dtype == form.center.dtype == np.float32
    np.testing.assert_allclose(
        score_windows(model, sliding_windows(values, 8)),
        reference_scores(model, sliding_windows(values, 8).astype(np.float32)),
        rtol=1e-5,
        atol=1e-5,
    )
