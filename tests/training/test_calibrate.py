import numpy as np
import pytest

from training.calibrate import Calibration, MadRule, QuantileRule, calibrate_threshold, score_summary
from training.errors import CalibrationError, ConfigError

SCORES = np.arange(1, 1001, dtype=np.float64)  # 1..1000


def test_quantile_rule_is_margin_times_quantile():
    calibration = calibrate_threshold(SCORES, QuantileRule(quantile=0.9, margin=1.5))

    assert calibration.threshold == pytest.approx(1.5 * np.quantile(SCORES, 0.9))
    assert calibration.fraction_over_threshold == 0.0  # 1.5 * 900.1 is above every score
    assert calibration.as_dict() == {
        "rule": "quantile",
        "quantile": 0.9,
        "margin": 1.5,
        "threshold": calibration.threshold,
        "n_scores": 1000,
        "train_fraction_over_threshold": 0.0,
    }


def test_mad_rule_is_median_plus_k_robust_sigmas():
    calibration = calibrate_threshold(SCORES, MadRule(k=0.5))

    # median 500.5, MAD 250 -> 500.5 + 0.5 * 1.4826 * 250
    assert calibration.threshold == pytest.approx(500.5 + 0.5 * 1.4826 * 250)
    assert calibration.fraction_over_threshold == pytest.approx(np.mean(calibration.threshold < SCORES))
    assert calibration.as_dict()["rule"] == "mad"
    assert calibration.as_dict()["k"] == 0.5


def test_default_rule_flags_a_small_share_of_training_windows():
    rng = np.random.default_rng(3)
    scores = np.abs(rng.normal(size=20_000))

    calibration = calibrate_threshold(scores, QuantileRule())

    assert isinstance(calibration, Calibration)
    assert calibration.fraction_over_threshold < 0.001


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: QuantileRule(quantile=0.0), r"threshold quantile must be in \(0, 1\], got 0.0"),
        (lambda: QuantileRule(quantile=1.5), r"threshold quantile must be in \(0, 1\], got 1.5"),
        (lambda: QuantileRule(margin=0.0), "threshold margin must be > 0, got 0.0"),
        (lambda: MadRule(k=-1.0), "threshold MAD multiplier k must be > 0, got -1.0"),
    ],
)
def test_rule_parameters_are_validated(factory, message):
    with pytest.raises(ConfigError, match=message):
        factory()


def test_bad_scores_are_rejected():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        calibrate_threshold(np.array([]), QuantileRule())
    # Data, not a bug: a TrainingError, so train.py reports it (SageMaker's failure file) like bad input.
    with pytest.raises(CalibrationError, match="NaN or infinity"):
        calibrate_threshold(np.array([1.0, np.nan]), QuantileRule())


def test_score_summary_keys_and_values():
    summary = score_summary(SCORES)

    assert list(summary) == ["p50", "p90", "p99", "p99.5", "p99.9", "mean", "max"]
    assert summary["p50"] == pytest.approx(500.5)
    assert summary["max"] == 1000.0
