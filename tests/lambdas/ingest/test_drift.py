"""The drift statistics, with numbers worked out by hand, and the contracts with the edge and training."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from greengrass_components.anomaly_detector.stats import SCORE_EDGES, Distributions
from lambdas.ingest.drift import (
    DriftReport,
    PeriodDistribution,
    TrainingProfile,
    drift_report,
    expected_fractions,
    parse_distribution,
    population_stability_index,
    training_cdf,
)
from lambdas.ingest.errors import BadEventError
from training.calibrate import QuantileRule, calibrate_threshold, score_summary


def training_metrics(**overrides: Any) -> dict[str, Any]:
    """The parts of train.py's training_metrics drift reads (threshold 2.0, scores 0..2)."""
    metrics: dict[str, Any] = {
        "score_quantiles": {
            "p50": 1.0,
            "p90": 1.6,
            "p99": 1.9,
            "p99.5": 1.95,
            "p99.9": 1.99,
            "mean": 0.9,
            "max": 2.0,
        },
        "calibration": {"rule": "quantile", "threshold": 2.0, "train_fraction_over_threshold": 0.0},
        "detector": {"center": [10.0, 0.0], "scale": [2.0, 0.5]},
    }
    metrics.update(overrides)
    return metrics


def profile(**overrides: Any) -> TrainingProfile:
    found = TrainingProfile.from_metrics(training_metrics(**overrides))
    assert found is not None
    return found


def period(counts: tuple[int, ...], means: tuple[float, ...] = (10.0, 0.0)) -> PeriodDistribution:
    return PeriodDistribution(
        windows=sum(counts), edges_x_threshold=(0.5, 1.0), counts=counts, input_means=means
    )


def test_profile_reads_the_quantiles_as_cdf_points() -> None:
    found = profile()
    assert found.threshold == 2.0
    assert found.quantiles == (
        (0.0, 0.0),
        (0.5, 1.0),
        (0.9, 1.6),
        (0.99, 1.9),
        (0.995, 1.95),
        (0.999, 1.99),
        (1.0, 2.0),
    )
    assert (found.input_center, found.input_scale) == ((10.0, 0.0), (2.0, 0.5))


def test_training_cdf_interpolates_between_quantiles() -> None:
    found = profile()
    # x is in thresholds: 0.25 x 2.0 = score 0.5, halfway from (0, 0) to (0.5, 1.0).
    assert training_cdf(found, 0.25) == pytest.approx(0.25)
    assert training_cdf(found, 0.5) == pytest.approx(0.5)
    # Score 1.5: 0.5 + 0.4 * (1.5 - 1.0) / (1.6 - 1.0) = 0.8333...
    assert training_cdf(found, 0.75) == pytest.approx(0.5 + 0.4 * 0.5 / 0.6)
    assert training_cdf(found, 1.0) == 1.0
    assert training_cdf(found, 4.0) == 1.0
    assert training_cdf(found, 0.0) == 0.0


def test_expected_fractions_in_the_edge_histogram_bins() -> None:
    fractions = expected_fractions(profile(), SCORE_EDGES)
    # Bins: below 0, [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1), [1, 1.5), ... [4, inf).
    third = 0.4 * 0.5 / 0.6  # CDF(0.75) - CDF(0.5)
    assert fractions == pytest.approx((0.0, 0.25, 0.25, third, 0.5 - third, 0.0, 0.0, 0.0, 0.0))
    assert sum(fractions) == pytest.approx(1.0)


def test_psi_of_identical_distributions_is_zero() -> None:
    assert population_stability_index([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


def test_drift_report_worked_by_hand() -> None:
    # Expected (training) in bins [<0.5, 0.5-1, >=1]: 0.5, 0.5, 0 (floored to 1e-4).
    # Observed 0.25, 0.5, 0.25: PSI = (0.25 - 0.5) ln(0.25 / 0.5) + 0 + (0.25 - 1e-4) ln(0.25 / 1e-4)
    #                               = 0.25 ln 2 + 0.2499 ln 2500 = 0.173287 + 1.955229 = 2.128516
    report = drift_report("v1", period((25, 50, 25), means=(13.0, -0.25)), profile())

    assert report.score_psi == pytest.approx(0.25 * math.log(2) + 0.2499 * math.log(2500))
    assert report.score_psi == pytest.approx(2.128516, abs=1e-6)
    assert report.over_threshold_fraction == 0.25
    # The training fraction over the threshold is 0, floored at 0.001: 0.25 / 0.001.
    assert report.over_threshold_ratio == pytest.approx(250.0)
    # |13 - 10| / 2 = 1.5 and |-0.25 - 0| / 0.5 = 0.5.
    assert report.input_shift_by_channel == (1.5, 0.5)
    assert report.input_shift == 1.5
    assert report.windows == 100


def test_a_period_like_training_shows_no_drift() -> None:
    report = drift_report("v1", period((50, 50, 0)), profile(calibration={"threshold": 2.0}))
    assert report == DriftReport(
        model_version="v1",
        windows=100,
        score_psi=0.0,
        over_threshold_fraction=0.0,
        over_threshold_ratio=0.0,
        input_shift=0.0,
        input_shift_by_channel=(0.0, 0.0),
    )


def test_too_few_windows_give_no_score_statistics() -> None:
    report = drift_report("v1", period((5, 4, 1)), profile())
    assert (report.score_psi, report.over_threshold_fraction, report.over_threshold_ratio) == (
        None,
        None,
        None,
    )
    assert report.input_shift == 0.0  # the input means are still comparable


def test_no_input_shift_without_training_input_statistics_or_matching_channels() -> None:
    no_inputs = profile(detector={"name": "older"})
    assert drift_report("v1", period((50, 50, 0)), no_inputs).input_shift is None
    three_channels = period((50, 50, 0), means=(1.0, 2.0, 3.0))
    assert drift_report("v1", three_channels, profile()).input_shift is None


@pytest.mark.parametrize(
    "metrics",
    [
        {"calibration": {"threshold": 2.0}},  # no score quantiles
        {"score_quantiles": {"p50": 1.0, "max": 2.0}, "calibration": {"threshold": 2.0}},
        {"score_quantiles": training_metrics()["score_quantiles"], "calibration": {"threshold": 0}},
        {"score_quantiles": training_metrics()["score_quantiles"]},
    ],
)
def test_metrics_without_what_drift_needs_give_no_profile(metrics: dict[str, Any]) -> None:
    assert TrainingProfile.from_metrics(metrics) is None


def test_profile_reads_what_training_records() -> None:
    """The keys come from training/calibrate.py itself, so a rename there fails here."""
    scores = np.linspace(0.0, 1.0, 1001)
    calibration = calibrate_threshold(scores, QuantileRule())
    found = TrainingProfile.from_metrics(
        {"score_quantiles": score_summary(scores), "calibration": calibration.as_dict()}
    )
    assert found is not None
    assert found.threshold == pytest.approx(1.5 * 0.995)
    assert [p for p, _ in found.quantiles] == [0.0, 0.5, 0.9, 0.99, 0.995, 0.999, 1.0]
    assert found.quantiles[1][1] == pytest.approx(0.5)


def test_parse_reads_what_the_edge_sends() -> None:
    """The heartbeat's distribution as the edge component's own Distributions builds it."""
    edge = Distributions(("temperature", "pressure"))
    scores = np.array([0.1, 0.3, 0.9, 1.2, 5.0], dtype=np.float32)
    inputs = np.array([[1.0, 10.0], [3.0, 30.0]] * 2 + [[5.0, 50.0]], dtype=np.float32)
    edge.add(scores, inputs, threshold=1.0)

    parsed = parse_distribution(edge.summary(), "heartbeat from t")

    assert parsed == PeriodDistribution(
        windows=5,
        edges_x_threshold=SCORE_EDGES,
        counts=(0, 1, 1, 0, 1, 1, 0, 0, 1),
        input_means=(pytest.approx(2.6), pytest.approx(26.0)),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("distribution", "message"),
    [
        ([], "field 'distribution' must be an object"),
        ({"windows": -1}, "distribution.windows must be a count >= 0, got -1"),
        ({"windows": 3}, "distribution.score_histogram must be an object"),
        (
            {"windows": 3, "score_histogram": {"edges_x_threshold": [1.0, 0.5], "counts": [1, 1, 1]}},
            "edges_x_threshold must ascend",
        ),
        (
            {"windows": 3, "score_histogram": {"edges_x_threshold": [0.5, "x"], "counts": [1, 1, 1]}},
            "edges_x_threshold must be numbers",
        ),
        (
            {"windows": 3, "score_histogram": {"edges_x_threshold": [0.5, 1.0], "counts": [1, 2]}},
            "counts must be 3 counts >= 0",
        ),
        (
            {
                "windows": 3,
                "score_histogram": {"edges_x_threshold": [0.5, 1.0], "counts": [1, 1, 1]},
                "inputs": {"value": {"std": 1.0}},
            },
            "distribution.inputs.value needs a numeric 'mean'",
        ),
    ],
)
def test_malformed_distribution_is_refused(distribution: object, message: str) -> None:
    with pytest.raises(BadEventError, match="heartbeat from t: ") as caught:
        parse_distribution(distribution, "heartbeat from t")
    assert message in str(caught.value)


def test_absent_distribution_is_none() -> None:
    assert parse_distribution(None, "heartbeat from t") is None
