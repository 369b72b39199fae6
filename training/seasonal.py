"""Resolve the ``edge_postprocess`` hyperparameter's time-based seasonal keys to row counts.

The edge post-processing counts rows (``seasonal_lag``, ``reference_window``, ``value_short_window``), so
a lag of 288 rows is one day only for 5-minute data. The hyperparameter may instead give the period in
seconds and the two windows relative to it; training resolves them from the MEDIAN sampling interval of
its own rows and writes row keys only into the model's metadata (the device contract is unchanged):

``seasonal_period_s``
    The period, in seconds (e.g. 86400 for a day). ``seasonal_lag = round(period / median interval)``.
``reference_periods``
    ``reference_window = max(2, round(reference_periods * seasonal_lag))`` (the std's reference rows).
``value_short_fraction`` (in (0, 1])
    ``value_short_window = max(1, round(value_short_fraction * seasonal_lag))`` (the statistic's average).

The seasonal check is switched off (``seasonal_lag = 0``, and neither window is written, so a row value
the hyperparameter gave passes through unchanged) when the data cannot carry it: fewer than two training
rows, a median interval that is not positive, irregular sampling (fewer than half the intervals between
0.5 and 1.5 times the median), or a period of fewer than ``MIN_ROWS_PER_PERIOD`` or more than
``MAX_ROWS_PER_PERIOD`` rows. A lag is never clamped: a clamped lag compares the wrong phase of the
period, which is what this module exists to avoid.

Refused (``ConfigError``): a row key together with its time-based form (``seasonal_lag`` and
``seasonal_period_s``, ``reference_window`` and ``reference_periods``, ``value_short_window`` and
``value_short_fraction``), a relative key without ``seasonal_period_s``, ``reference_periods`` together
with ``level_windows`` / ``variance_window`` (they share ``reference_window``, which would then depend on
the data), and values that are not positive finite numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from training.errors import ConfigError

PERIOD_KEY: Final = "seasonal_period_s"
REFERENCE_KEY: Final = "reference_periods"
SHORT_KEY: Final = "value_short_fraction"
TIME_KEYS: Final = (PERIOD_KEY, REFERENCE_KEY, SHORT_KEY)
# time-based key -> the row key it resolves to (giving both is refused).
ROW_KEY_OF: Final[Mapping[str, str]] = {
    PERIOD_KEY: "seasonal_lag",
    REFERENCE_KEY: "reference_window",
    SHORT_KEY: "value_short_window",
}
# Below this a "period" is a few samples: no cycle to compare with.
MIN_ROWS_PER_PERIOD: Final = 8
# Bounds the device's state: lag + 1 lagged values and the reference window per stream and channel
# (one day at 8.64 s sampling; 2 periods of reference is then 20,000 values).
MAX_ROWS_PER_PERIOD: Final = 10_000
# Regular sampling: at least this share of the intervals lies within REGULAR_TOLERANCE of the median
# (half to 1.5 times it: jitter passes; event-driven data, or mostly gaps, does not).
REGULAR_TOLERANCE: Final = 0.5
MIN_REGULAR_SHARE: Final = 0.5


@dataclass(frozen=True)
class SamplingInterval:
    """The training rows' sampling: median interval (None: fewer than 2 rows) and regularity."""

    median_s: float | None
    regular_share: float  # share of the intervals within REGULAR_TOLERANCE of the median
    n_intervals: int


@dataclass(frozen=True)
class SeasonalResolution:
    """The row-based ``edge_postprocess`` for the model, and how it was resolved (for the metrics)."""

    edge_postprocess: dict[str, object]
    status: str  # "row-based" (no time keys), "resolved", or "off: <reason>"
    seasonal_lag: int | None = None  # None: row-based, passed through
    period_s: float | None = None
    interval: SamplingInterval | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "seasonal_period_s": self.period_s,
            "median_interval_s": None if self.interval is None else self.interval.median_s,
            "regular_share": None if self.interval is None else self.interval.regular_share,
            "seasonal_lag": self.seasonal_lag,
            "status": self.status,
        }


def sampling_interval(timestamps: Sequence[npt.NDArray[np.datetime64]]) -> SamplingInterval:
    """Median and regularity of the intervals between consecutive rows, pooled over the files.

    Intervals are taken within each file only (never across two files). A step back (NAB's DST hour)
    is a non-positive interval: it counts as irregular and barely moves the median.
    """
    parts: list[npt.NDArray[np.float64]] = [
        np.diff(t.astype("datetime64[us]").astype(np.int64)).astype(np.float64) / 1e6
        for t in timestamps
        if t.size > 1
    ]
    if not parts:
        return SamplingInterval(median_s=None, regular_share=0.0, n_intervals=0)
    diffs: npt.NDArray[np.float64] = np.concatenate(parts)
    median = float(np.median(diffs))
    regular = float(np.mean(np.abs(diffs - median) <= REGULAR_TOLERANCE * abs(median)))
    return SamplingInterval(median_s=median, regular_share=regular, n_intervals=int(diffs.size))


def uses_time_keys(settings: Mapping[str, object] | None) -> bool:
    return settings is not None and any(key in settings for key in TIME_KEYS)


def validate_time_keys(settings: Mapping[str, object]) -> None:
    """Refuse contradictory or invalid time-based keys (no data needed; run before any data is read)."""
    for time_key, row_key in ROW_KEY_OF.items():
        if time_key in settings and row_key in settings:
            raise ConfigError(
                f"edge_postprocess gives both {row_key} (rows) and {time_key} (time-based); give one"
            )
    relative = [key for key in (REFERENCE_KEY, SHORT_KEY) if key in settings]
    if relative and PERIOD_KEY not in settings:
        raise ConfigError(f"edge_postprocess {relative[0]} is relative to {PERIOD_KEY}, which is missing")
    if REFERENCE_KEY in settings and (settings.get("level_windows") or settings.get("variance_window")):
        raise ConfigError(
            f"edge_postprocess {REFERENCE_KEY} cannot be combined with level_windows / variance_window "
            "(they share reference_window); give reference_window in rows"
        )
    for key in TIME_KEYS:
        if key in settings:
            _positive_number(settings, key)
    if SHORT_KEY in settings and _positive_number(settings, SHORT_KEY) > 1.0:
        raise ConfigError(f"edge_postprocess {SHORT_KEY} must be in (0, 1], got {settings[SHORT_KEY]!r}")


def resolve_edge_postprocess(
    settings: Mapping[str, object], interval: SamplingInterval
) -> SeasonalResolution:
    """Replace the time-based keys by row keys for data sampled at ``interval`` (see the module doc)."""
    validate_time_keys(settings)
    rows = {key: value for key, value in settings.items() if key not in TIME_KEYS}
    if PERIOD_KEY not in settings:
        return SeasonalResolution(edge_postprocess=rows, status="row-based")
    period = _positive_number(settings, PERIOD_KEY)
    lag, reason = _lag_or_reason(period, interval)
    rows["seasonal_lag"] = lag
    if reason is not None:
        return SeasonalResolution(rows, f"off: {reason}", seasonal_lag=0, period_s=period, interval=interval)
    if REFERENCE_KEY in settings:
        rows["reference_window"] = max(2, _round_half_up(_positive_number(settings, REFERENCE_KEY) * lag))
    if SHORT_KEY in settings:
        rows["value_short_window"] = max(1, _round_half_up(_positive_number(settings, SHORT_KEY) * lag))
    return SeasonalResolution(rows, "resolved", seasonal_lag=lag, period_s=period, interval=interval)


def _lag_or_reason(period: float, interval: SamplingInterval) -> tuple[int, str | None]:
    """``(lag, None)``, or ``(0, why the seasonal check is off)``."""
    median = interval.median_s
    if median is None:
        return 0, "fewer than 2 training rows, no sampling interval"
    if median <= 0.0:
        return 0, f"median sampling interval {median:g} s is not positive"
    if interval.regular_share < MIN_REGULAR_SHARE:
        return 0, (
            f"irregular sampling: {interval.regular_share:.0%} of the intervals within "
            f"{REGULAR_TOLERANCE:.0%} of the median {median:g} s (need {MIN_REGULAR_SHARE:.0%})"
        )
    lag = _round_half_up(period / median)
    if lag < MIN_ROWS_PER_PERIOD:
        return 0, f"period {period:g} s is {lag} rows of {median:g} s, fewer than {MIN_ROWS_PER_PERIOD}"
    if lag > MAX_ROWS_PER_PERIOD:
        return 0, f"period {period:g} s is {lag} rows of {median:g} s, more than {MAX_ROWS_PER_PERIOD}"
    return lag, None


def _positive_number(settings: Mapping[str, object], key: str) -> float:
    value = settings[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(f"edge_postprocess {key} must be a positive number, got {value!r}")
    return float(value)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)
