"""Drift of one heartbeat period against the model's training: pure arithmetic, no AWS, no numpy.

What each side records:

- The edge (``greengrass_components/anomaly_detector/stats.py``) sends, per heartbeat period, a score
  histogram in units of the threshold (``distribution.score_histogram``: edges and counts) and, per input
  channel, the mean/std/min/max of the newest row of every scored window (``distribution.inputs``).
- Training (``training/train.py``) records in ``training_metrics`` the score quantiles
  (``score_quantiles``: p50, p90, p99, p99.5, p99.9, mean, max), the threshold and the training fraction
  over it (``calibration``), and the per-channel median and robust scale the detector normalises with
  (``detector.center`` / ``detector.scale``), in channel order.

Statistics (each ``None`` when an input is missing, so "unknown" never reads as "no drift"):

- ``score_psi``: the population-stability index between the period's histogram and the training score
  distribution in the same bins, ``sum((o - e) * ln(o / e))``. The training CDF at a bin edge is read off
  the recorded quantiles by linear interpolation, anchored at (0, score 0) (scores are non-negative) and
  (1, max). Fractions are floored at ``PSI_FLOOR`` so an empty bin counts as rare, not impossible.
  Rule of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted. Only computed from ``MIN_WINDOWS`` up.
- ``over_threshold_fraction``: windows in bins at or above 1 x threshold, over all windows; and
  ``over_threshold_ratio``: that fraction over the training fraction (floored at ``TRAIN_FRACTION_FLOOR``,
  because a quantile-calibrated threshold usually leaves no training window above it).
- ``input_shift``: per channel, ``|period mean - training median| / training robust scale``, and the
  largest over the channels: how many training "standard deviations" the level has moved. Channels are
  matched by position (the edge reports them in the model's channel order); a count mismatch gives None.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

from lambdas.ingest.errors import BadEventError

PSI_FLOOR: Final = 1e-4
TRAIN_FRACTION_FLOOR: Final = 1e-3
# Fewer windows than this make the histogram too coarse to compare (one window moves a bin by 2 %).
MIN_WINDOWS: Final = 50
# training_metrics.score_quantiles keys and the probability each stands for.
QUANTILE_KEYS: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.5", 0.995), ("p99.9", 0.999))


@dataclass(frozen=True)
class PeriodDistribution:
    """The ``distribution`` object of a heartbeat: what the edge scored in one heartbeat period."""

    windows: int
    edges_x_threshold: tuple[float, ...]
    counts: tuple[int, ...]  # len(edges) + 1 bins: below the first edge ... at or above the last
    input_means: tuple[float, ...]  # per channel, in the order the device reports them


@dataclass(frozen=True)
class TrainingProfile:
    """What drift is measured against, read from a model's ``training_metrics``."""

    threshold: float
    # (probability, score) points of the training score CDF, ascending, from (0, 0) to (1, max).
    quantiles: tuple[tuple[float, float], ...]
    fraction_over_threshold: float
    input_center: tuple[float, ...]  # empty when training recorded no input statistics
    input_scale: tuple[float, ...]

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, object]) -> TrainingProfile | None:
        """None when the metrics lack the score quantiles or the threshold (an older or foreign model)."""
        quantiles = metrics.get("score_quantiles")
        calibration = metrics.get("calibration")
        if not isinstance(quantiles, Mapping) or not isinstance(calibration, Mapping):
            return None
        threshold = _number(calibration.get("threshold"))
        top = _number(quantiles.get("max"))
        if threshold is None or threshold <= 0 or top is None:
            return None
        points = [(0.0, 0.0)]
        for key, probability in QUANTILE_KEYS:
            value = _number(quantiles.get(key))
            if value is None:
                return None
            points.append((probability, value))
        points.append((1.0, top))
        detector = metrics.get("detector")
        center: tuple[float, ...] = ()
        scale: tuple[float, ...] = ()
        if isinstance(detector, Mapping):
            center = _numbers(detector.get("center"))
            scale = _numbers(detector.get("scale"))
            if len(center) != len(scale):
                center, scale = (), ()
        return cls(
            threshold=threshold,
            quantiles=tuple(points),
            fraction_over_threshold=_number(calibration.get("train_fraction_over_threshold")) or 0.0,
            input_center=center,
            input_scale=scale,
        )


@dataclass(frozen=True)
class DriftReport:
    model_version: str
    windows: int
    score_psi: float | None
    over_threshold_fraction: float | None
    over_threshold_ratio: float | None
    input_shift: float | None  # the largest channel shift
    input_shift_by_channel: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["input_shift_by_channel"] = list(self.input_shift_by_channel)
        return data


def parse_distribution(value: object, label: str) -> PeriodDistribution | None:
    """The heartbeat's ``distribution`` object; None when the device sent none (or an empty period)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadEventError(f"{label}: field 'distribution' must be an object")
    windows = value.get("windows")
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 0:
        raise BadEventError(f"{label}: distribution.windows must be a count >= 0, got {windows!r}")
    histogram = value.get("score_histogram")
    if not isinstance(histogram, Mapping):
        raise BadEventError(f"{label}: distribution.score_histogram must be an object")
    edges = histogram.get("edges_x_threshold")
    counts = histogram.get("counts")
    edge_values = _numbers(edges)
    if not isinstance(edges, list) or len(edge_values) != len(edges) or not edge_values:
        raise BadEventError(f"{label}: distribution.score_histogram.edges_x_threshold must be numbers")
    if any(b <= a for a, b in itertools.pairwise(edge_values)):
        raise BadEventError(f"{label}: distribution.score_histogram.edges_x_threshold must ascend")
    if (
        not isinstance(counts, list)
        or len(counts) != len(edge_values) + 1
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)
    ):
        raise BadEventError(
            f"{label}: distribution.score_histogram.counts must be {len(edge_values) + 1} counts >= 0"
        )
    inputs = value.get("inputs", {})
    if not isinstance(inputs, Mapping):
        raise BadEventError(f"{label}: distribution.inputs must be an object")
    means: list[float] = []
    for channel, stats in inputs.items():
        mean = _number(stats.get("mean")) if isinstance(stats, Mapping) else None
        if mean is None:
            raise BadEventError(f"{label}: distribution.inputs.{channel} needs a numeric 'mean'")
        means.append(mean)
    return PeriodDistribution(
        windows=windows, edges_x_threshold=edge_values, counts=tuple(counts), input_means=tuple(means)
    )


def training_cdf(profile: TrainingProfile, x_threshold: float) -> float:
    """The training fraction of windows scoring below ``x_threshold`` times the training threshold."""
    score = x_threshold * profile.threshold
    points = profile.quantiles
    if score <= points[0][1]:
        return 0.0
    for (p_low, s_low), (p_high, s_high) in itertools.pairwise(points):
        if score <= s_high:
            if s_high == s_low:
                return p_high
            return p_low + (p_high - p_low) * (score - s_low) / (s_high - s_low)
    return 1.0


def expected_fractions(profile: TrainingProfile, edges: Sequence[float]) -> tuple[float, ...]:
    """The training fraction in each histogram bin (below the first edge, between edges, above the last)."""
    cdf = [0.0, *(training_cdf(profile, edge) for edge in edges), 1.0]
    return tuple(high - low for low, high in itertools.pairwise(cdf))


def population_stability_index(observed: Sequence[float], expected: Sequence[float]) -> float:
    total = 0.0
    for raw_o, raw_e in zip(observed, expected, strict=True):
        o, e = max(raw_o, PSI_FLOOR), max(raw_e, PSI_FLOOR)
        total += (o - e) * math.log(o / e)
    return total


def drift_report(model_version: str, period: PeriodDistribution, profile: TrainingProfile) -> DriftReport:
    windows = sum(period.counts)
    psi = fraction = ratio = None
    if windows >= MIN_WINDOWS:
        observed = [count / windows for count in period.counts]
        psi = population_stability_index(observed, expected_fractions(profile, period.edges_x_threshold))
        # Bin i (i >= 1) holds scores from edges[i - 1] up: the bins from the edge 1.0 on are "over".
        over = sum(
            c for i, c in enumerate(period.counts) if i >= 1 and period.edges_x_threshold[i - 1] >= 1.0
        )
        fraction = over / windows
        ratio = fraction / max(profile.fraction_over_threshold, TRAIN_FRACTION_FLOOR)
    shifts: tuple[float, ...] = ()
    if profile.input_center and len(period.input_means) == len(profile.input_center):
        shifts = tuple(
            abs(mean - center) / scale
            for mean, center, scale in zip(
                period.input_means, profile.input_center, profile.input_scale, strict=True
            )
            if scale > 0
        )
    return DriftReport(
        model_version=model_version,
        windows=windows,
        score_psi=psi,
        over_threshold_fraction=fraction,
        over_threshold_ratio=ratio,
        input_shift=max(shifts) if shifts else None,
        input_shift_by_channel=shifts,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _numbers(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        return ()
    numbers = [_number(v) for v in value]
    return tuple(n for n in numbers if n is not None) if all(n is not None for n in numbers) else ()
