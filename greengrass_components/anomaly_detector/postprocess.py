"""Online, causal post-processing: raw model scores of one stream in, an anomaly score in [0, 1] out.

The ONNX model's raw score is in "multiples of a typical training residual". How large a normal score is
still drifts from stream to stream and over time, so one fixed threshold on raw scores is fragile. Two
methods map raw scores to ``[0, 1]`` using only the scores seen so far (never labels, never the future):

``likelihood`` (HTM-style anomaly likelihood, Ahmad et al. 2017)
    Keep the moving average of the last ``short_window`` raw scores (optionally ``log1p``-compressed, so
    one huge spike does not dominate the statistics). Keep the mean and variance of those averages over
    the last ``long_window`` rows, *excluding* the current ones. The current average's Gaussian tail
    probability ``Q(z)`` says how unusual it is for this stream; the output is
    ``L / (L + half_log10)`` with ``L = -log10 Q(z)``, so ``0.5`` means a tail probability of
    ``10**-half_log10`` and the map never saturates (a corpus-wide threshold sweep keeps its ordering).
    With ``long_fraction > 0`` the history grows with the stream, to ``long_fraction`` times the rows
    seen so far (never below ``long_window``, never above ``long_window_max``): on a long stream a rare,
    recurring burst then stays in the reference instead of surprising it again every ``long_window`` rows.

``ratio``
    The moving average ``m`` of the last ``short_window`` raw scores against the model's calibrated raw
    threshold ``t``: ``m / (m + t)``, so ``0.5`` is exactly the calibrated threshold. For long anomalous
    segments (SKAB), where smoothing pays and the training-set threshold is the right reference.

Checks on the stream's own values (only when ``update`` is given the newest sample, one value per
channel, e.g. ``Decision.window[-1]``; each off by default), combined with the score above by ``max``
(or ``union``: ``1 - prod(1 - s)``):

``spatial_tolerance`` (NAB's HTM detector)
    The newest value against the min/max of every value the stream has shown; outside that range by more
    than ``spatial_tolerance`` times its width, the score is 1.
``record_window``
    A level never seen lately: the mean of the last ``record_window`` values against the min/max of the
    ``record_history`` values before them (once at least ``record_min_history`` of those exist); outside
    that range, the score is 1. Unlike the spatial check it forgets, so a level the stream left long ago
    (and a slow drift into a rare level) counts again, and the mean ignores single spikes.
``seasonal_lag``
    ``|x_t - x_{t-lag}|`` in units of the std of the last ``reference_window`` values: a missing or
    changed daily cycle, which a short forecasting window cannot see.
``level_windows`` / ``variance_window``
    ``|mean of the last k values - reference mean|`` per ``k``, and the log ratio of the last
    ``variance_window`` values' std to the reference std (two-sided: flat lines and bursts of noise).

Each value statistic goes through the same likelihood as the raw score (its own ``value_short_window``
average against its own history), per channel, so units never matter.

Then, optionally, repeated alarms are damped: after a score ``>= suppress_level`` every score of the next
``suppress_rows`` rows is multiplied by ``suppress_factor``. One alarm per event is what an operator
(and NAB, which counts only the first detection in a window and charges every false one) wants. With
``suppress_rearm_ratio`` (0 = off, else >= 1.1), a damped row still passes, and starts the damping
again, when its score is ``>= suppress_level`` and the method's short moving average of raw scores
(of ``log1p`` of them with ``log_scores``) exceeds that ratio times the largest such average since the
alarm, if that peak is positive: a minor alarm must not silence a far larger anomaly that follows it. A
ratio of at least 1.1 keeps a plateau's rounding noise (the two implementations round differently) from
deciding anything.

For segment-labelled data (SKAB) the opposite helps: ``hold_rows`` keeps the output at ``decision_level``
for that many rows after the last alarm, bridging short gaps inside one anomalous segment.

A stream outputs ``0`` until it has seen ``warmup`` raw scores. Every step is causal and O(1) amortised
per sample and channel, in plain Python. The parameters travel in the model's
``edge_postprocess`` metadata (docs/contracts.md §1), so the device needs no side configuration.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Final

from .errors import ModelError

METADATA_KEY: Final = "edge_postprocess"
METHODS: Final = ("likelihood", "ratio")
COMBINES: Final = ("max", "union")
_LOG10: Final = math.log(10.0)
_SQRT2: Final = math.sqrt(2.0)
# Beyond this z, erfc underflows in float64; the asymptotic tail expansion is exact to < 1e-3 there.
_ASYMPTOTIC_Z: Final = 30.0
# Below this, whether a plateau of equal raw scores re-arms the damping would be decided by rounding.
REARM_MIN_RATIO: Final = 1.1


@dataclass(frozen=True)
class PostprocessConfig:
    method: str = "likelihood"
    short_window: int = 10
    long_window: int = 8000
    warmup: int = 100
    log_scores: bool = True
    min_std: float = 0.01
    half_log10: float = 5.0
    suppress_level: float = 1.0
    suppress_rows: int = 0
    suppress_factor: float = 1.0
    # A damped row whose score is >= suppress_level passes (and restarts the damping) when its short raw
    # average exceeds this times the (positive) peak average since the alarm. 0 = off, else >= 1.1.
    suppress_rearm_ratio: float = 0.0
    decision_level: float = 0.5
    # Checks on the stream's own values (used only when update() is given the newest sample; 0/() = off).
    spatial_tolerance: float = 0.0
    record_window: int = 0
    record_history: int = 8000
    record_min_history: int = 1000
    level_windows: tuple[int, ...] = ()
    variance_window: int = 0
    seasonal_lag: int = 0
    reference_window: int = 288
    value_short_window: int = 10
    combine: str = "max"
    # After an alarm, keep the output at >= decision_level for this many rows (segment-labelled data).
    hold_rows: int = 0
    # The raw-score likelihood's history grows with the stream: long_fraction * rows seen once that
    # exceeds long_window, never beyond long_window_max rows (0.0 = fixed at long_window).
    long_fraction: float = 0.0
    long_window_max: int = 8000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ModelError(f"edge_postprocess method must be one of {list(METHODS)}, got {self.method!r}")
        if self.combine not in COMBINES:
            raise ModelError(
                f"edge_postprocess combine must be one of {list(COMBINES)}, got {self.combine!r}"
            )
        for name in (
            "short_window",
            "long_window",
            "reference_window",
            "value_short_window",
            "long_window_max",
            "record_history",
            "record_min_history",
        ):
            if getattr(self, name) < 1:
                raise ModelError(f"edge_postprocess {name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "warmup",
            "suppress_rows",
            "variance_window",
            "seasonal_lag",
            "hold_rows",
            "record_window",
        ):
            if getattr(self, name) < 0:
                raise ModelError(f"edge_postprocess {name} must be >= 0, got {getattr(self, name)}")
        self._check_value_settings()
        if not (self.min_std > 0 and self.half_log10 > 0):
            raise ModelError("edge_postprocess min_std and half_log10 must be > 0")
        if not 0.0 <= self.long_fraction <= 1.0:
            raise ModelError(f"edge_postprocess long_fraction must be in [0, 1], got {self.long_fraction}")
        if not self.spatial_tolerance >= 0.0:
            raise ModelError(f"edge_postprocess spatial_tolerance must be >= 0, got {self.spatial_tolerance}")
        if not 0.0 <= self.suppress_factor <= 1.0:
            raise ModelError(
                f"edge_postprocess suppress_factor must be in [0, 1], got {self.suppress_factor}"
            )
        rearm = self.suppress_rearm_ratio
        if not (rearm == 0.0 or rearm >= REARM_MIN_RATIO):
            raise ModelError(
                f"edge_postprocess suppress_rearm_ratio must be 0 (off) or >= {REARM_MIN_RATIO}, got {rearm}"
            )
        if not 0.0 < self.decision_level <= 1.0:
            raise ModelError(f"edge_postprocess decision_level must be in (0, 1], got {self.decision_level}")

    def _check_value_settings(self) -> None:
        if self.record_window and self.record_min_history > self.record_history:
            raise ModelError(
                f"edge_postprocess record_min_history ({self.record_min_history}) must be <= record_history "
                f"({self.record_history})"
            )
        for k in self.level_windows:
            if not 1 <= k < self.reference_window:
                raise ModelError(f"edge_postprocess level_windows must be in [1, reference_window), got {k}")
        if self.variance_window == 1 or self.variance_window >= max(self.reference_window, 2):
            raise ModelError(
                "edge_postprocess variance_window must be 0 (off) or in [2, reference_window), "
                f"got {self.variance_window}"
            )

    @property
    def uses_values(self) -> bool:
        """Whether any check needs the newest sample's values (``update(raw, values)``)."""
        return bool(
            self.spatial_tolerance
            or self.level_windows
            or self.variance_window
            or self.seasonal_lag
            or self.record_window
        )

    @classmethod
    def from_json(cls, text: str) -> PostprocessConfig:
        """Parse the ``edge_postprocess`` metadata value; unknown keys or wrong types are refused."""
        try:
            raw = json.loads(text)
        # ValueError covers JSONDecodeError and Python's limit on integer digits; RecursionError, deeply
        # nested arrays: all mean "not a usable JSON value" and must be a refusal, not a crash.
        except (ValueError, RecursionError):
            raise ModelError(f"{METADATA_KEY} is not JSON: {text[:200]!r}") from None
        if not isinstance(raw, dict):
            raise ModelError(f"{METADATA_KEY} must be a JSON object, got {text!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ModelError(f"{METADATA_KEY} has unknown keys: {unknown}")
        defaults = cls()
        values: dict[str, object] = {}
        for name, given in raw.items():
            expected = type(getattr(defaults, name))
            # JSON has one number type: an integral float setting may arrive as an int.
            try:
                value = float(given) if expected is float and type(given) is int else given
            except OverflowError:
                raise ModelError(f"{METADATA_KEY} {name} is too large for a float") from None
            if expected is tuple:
                if not (isinstance(given, list) and all(type(k) is int for k in given)):
                    raise ModelError(f"{METADATA_KEY} {name} must be a list of int, got {given!r}")
                value = tuple(given)
            if type(value) is not expected:
                raise ModelError(
                    f"{METADATA_KEY} {name} must be {expected.__name__}, got {type(value).__name__}"
                )
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_metadata(cls, extra_metadata: Mapping[str, str]) -> PostprocessConfig:
        """The model's own settings, or the defaults for a model that carries none."""
        text = extra_metadata.get(METADATA_KEY)
        return cls() if text is None else cls.from_json(text)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def log10_tail(z: float) -> float:
    """``-log10 Q(z)`` for the standard normal tail ``Q``; accurate far into the tail (no underflow)."""
    if z < _ASYMPTOTIC_Z:
        q = 0.5 * math.erfc(z / _SQRT2)
        return -math.log10(q) if q > 0.0 else _asymptotic(z)
    return _asymptotic(z)


def _asymptotic(z: float) -> float:
    # log Q(z) ~ -z^2/2 - log(z * sqrt(2 pi)) for large z.
    return (0.5 * z * z + math.log(z * math.sqrt(2.0 * math.pi))) / _LOG10


class _Tail:
    """HTM's anomaly likelihood of one statistic: its short moving average against its own recent history.

    ``update`` returns ``-log10`` of the Gaussian tail probability of the current average, measured
    against the mean/std of the averages of the previous ``long_window`` rows (the current one excluded),
    then remembers the average. Two-sided tails score surprising drops as well as rises.
    """

    def __init__(self, short_window: int, long_window: int, min_std: float, min_history: int) -> None:
        self._short: deque[float] = deque(maxlen=short_window)
        self._short_sum = 0.0
        self._long: deque[float] = deque()
        self._long_window = long_window
        self._long_sum = 0.0
        self._long_sq = 0.0
        self._min_std = min_std
        self._min_history = max(min_history, 2)
        self.average = 0.0  # the latest short moving average

    def update(self, value: float, *, two_sided: bool = False, long_window: int = 0) -> float:
        """``long_window`` > the configured one lengthens the history from now on (it never shrinks)."""
        self._long_window = max(self._long_window, long_window)
        if len(self._short) == self._short.maxlen:
            self._short_sum -= self._short[0]
        self._short.append(value)
        self._short_sum += value
        average = self._short_sum / len(self._short)
        self.average = average
        tail = 0.0
        n = len(self._long)
        if n >= self._min_history:
            mean = self._long_sum / n
            std = max(math.sqrt(max(self._long_sq / n - mean * mean, 0.0)), self._min_std)
            z = (average - mean) / std
            if two_sided:
                z = abs(z)
            tail = log10_tail(z) if z > 0 else 0.0
        self._long.append(average)
        self._long_sum += average
        self._long_sq += average * average
        while len(self._long) > self._long_window:
            old = self._long.popleft()
            self._long_sum -= old
            self._long_sq -= old * old
        return tail


class _Moments:
    """Mean and standard deviation of the last ``length`` values, O(1) per value.

    Values are shifted by the first one seen (large raw values, e.g. bytes, would otherwise lose the
    variance to cancellation) and the running sums are recomputed exactly every ``length`` values so
    that rounding does not accumulate over a long stream.
    """

    def __init__(self, length: int) -> None:
        self._values: deque[float] = deque(maxlen=length)
        self._shift: float | None = None
        self._sum = 0.0
        self._sq = 0.0
        self._since_exact = 0

    @property
    def full(self) -> bool:
        return len(self._values) == self._values.maxlen

    def add(self, value: float) -> None:
        if self._shift is None:
            self._shift = value
        x = value - self._shift
        if self.full:
            old = self._values[0]
            self._sum -= old
            self._sq -= old * old
        self._values.append(x)
        self._since_exact += 1
        if self._since_exact >= len(self._values):
            self._sum = math.fsum(self._values)
            self._sq = math.fsum(v * v for v in self._values)
            self._since_exact = 0
        else:
            self._sum += x
            self._sq += x * x

    def mean(self) -> float:
        return self._sum / len(self._values) + (self._shift or 0.0)

    def std(self) -> float:
        n = len(self._values)
        mean = self._sum / n
        return math.sqrt(max(self._sq / n - mean * mean, 0.0))


class _LevelRecord:
    """Whether the mean of the last ``window`` values leaves the range of the ``history`` values before them.

    O(1) amortised per value: a running sum for the mean and monotonic deques for the range. The sum is
    recomputed exactly every ``min(window, history)`` values: a huge value (an error code) leaves a rounding
    error of its size in the running sum, and the recomputation must come while that value is still in the
    history, whose range (and so the tolerance) it widens.
    """

    def __init__(self, window: int, history: int, min_history: int) -> None:
        self._exact_every = min(window, history)
        self._window = window
        self._history = history
        self._min_history = min_history
        self._recent: deque[float] = deque()
        self._sum = 0.0
        self._seen = 0
        self._highs: deque[tuple[int, float]] = deque()  # (index, value), values decreasing
        self._lows: deque[tuple[int, float]] = deque()  # (index, value), values increasing

    def update(self, value: float) -> bool:
        index = self._seen
        self._seen += 1
        self._recent.append(value)
        self._sum += value
        if len(self._recent) > self._window:
            old = self._recent.popleft()
            self._sum -= old
            self._remember(index - self._window, old)
        if self._seen % self._exact_every == 0:
            self._sum = math.fsum(self._recent)
        if min(max(self._seen - self._window, 0), self._history) < self._min_history:
            return False
        mean = self._sum / len(self._recent)
        low, high = self._lows[0][1], self._highs[0][1]
        # A relative guard: on a flat line the mean equals the range and rounding must not decide.
        tolerance = 1e-9 * (abs(low) + abs(high) + 1.0)
        return mean > high + tolerance or mean < low - tolerance

    def _remember(self, index: int, value: float) -> None:
        while self._highs and self._highs[-1][1] <= value:
            self._highs.pop()
        self._highs.append((index, value))
        while self._lows and self._lows[-1][1] >= value:
            self._lows.pop()
        self._lows.append((index, value))
        oldest = index - self._history + 1
        while self._highs[0][0] < oldest:
            self._highs.popleft()
        while self._lows[0][0] < oldest:
            self._lows.popleft()


class _ChannelChecks:
    """The value-based statistics of one channel, each with its own likelihood (see the module doc)."""

    def __init__(self, config: PostprocessConfig) -> None:
        cfg = config
        self.config = config
        self.low = math.inf
        self.high = -math.inf
        self._reference = _Moments(cfg.reference_window)
        self._levels = [_Moments(k) for k in cfg.level_windows]
        self._variance = _Moments(cfg.variance_window) if cfg.variance_window else None
        self._lagged: deque[float] = deque(maxlen=cfg.seasonal_lag + 1)
        self._record = (
            _LevelRecord(cfg.record_window, cfg.record_history, cfg.record_min_history)
            if cfg.record_window
            else None
        )
        count = len(self._levels) + (self._variance is not None) + (cfg.seasonal_lag > 0)
        self._tails = [
            _Tail(cfg.value_short_window, cfg.long_window, cfg.min_std, cfg.warmup) for _ in range(count)
        ]

    def spatial(self, value: float) -> bool:
        """True when ``value`` leaves the range seen so far by more than the tolerance; then learns it."""
        outside = False
        if self.high > self.low:
            margin = self.config.spatial_tolerance * (self.high - self.low)
            outside = value > self.high + margin or value < self.low - margin
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        return outside

    def record(self, value: float) -> bool:
        """True when the recent mean leaves the range of the history before it (see ``_LevelRecord``)."""
        return self._record is not None and self._record.update(value)

    def update(self, value: float) -> float:
        """The largest ``-log10`` tail probability among this channel's statistics."""
        cfg = self.config
        self._reference.add(value)
        for moments in self._levels:
            moments.add(value)
        if self._variance is not None:
            self._variance.add(value)
        if cfg.seasonal_lag:
            self._lagged.append(value)
        if not self._reference.full:
            return 0.0
        ref_mean = self._reference.mean()
        ref_std = self._reference.std()
        # Relative floor: a perfectly flat reference makes any change infinitely surprising otherwise.
        unit = max(ref_std, 1e-9 * (abs(ref_mean) + 1.0))
        best = 0.0
        tails = iter(self._tails)
        for moments in self._levels:
            best = max(best, next(tails).update(abs(moments.mean() - ref_mean) / unit))
        if self._variance is not None:
            ratio = (self._variance.std() + 0.01 * unit) / (ref_std + 0.01 * unit)
            best = max(best, next(tails).update(math.log(ratio), two_sided=True))
        if cfg.seasonal_lag and len(self._lagged) == self._lagged.maxlen:
            best = max(best, next(tails).update(abs(value - self._lagged[0]) / unit))
        return best


class StreamPostprocessor:
    """The state of one stream. ``update`` takes raw scores in time order and returns ``[0, 1]`` scores.

    ``values`` (optional) is the newest sample, one value per channel: the window's last row. The
    value-based checks (spatial range, level, variance and seasonal likelihoods) run only when given.
    """

    def __init__(self, config: PostprocessConfig, threshold: float) -> None:
        self.config = config
        self.threshold = threshold
        self._raw_tail = _Tail(config.short_window, config.long_window, config.min_std, 2)
        self._short: deque[float] = deque(maxlen=config.short_window)
        self._short_sum = 0.0
        self._channels: list[_ChannelChecks] = []
        self._suppress_left = 0
        self._suppress_peak = 0.0  # the largest short raw average since the alarm that started the damping
        self._hold_left = 0
        self.seen = 0

    def update(self, raw: float, values: Sequence[float] | None = None) -> float:
        cfg = self.config
        checks_values = values is not None and cfg.uses_values
        if checks_values and self._channels and len(values or ()) != len(self._channels):
            # Refused before any state changes, so the stream carries on as if the call never happened.
            raise ValueError(f"expected {len(self._channels)} values, got {len(values or ())}")
        value = math.log1p(max(raw, 0.0)) if cfg.log_scores else raw
        self.seen += 1
        if cfg.method == "ratio":
            if len(self._short) == self._short.maxlen:
                self._short_sum -= self._short[0]
            self._short.append(value)
            self._short_sum += value
            average = self._short_sum / len(self._short)
            score = _ratio(average, math.log1p(self.threshold) if cfg.log_scores else self.threshold)
        else:
            longer = min(int(cfg.long_fraction * self.seen), cfg.long_window_max)
            score = self._from_tail(self._raw_tail.update(value, long_window=longer))
            average = self._raw_tail.average
        out_of_range = False
        if checks_values and values is not None:
            score, out_of_range = self._value_checks(score, values)
        if self.seen <= cfg.warmup:
            return 0.0
        if out_of_range:
            score = 1.0
        return self._hold(self._suppress(score, average))

    def _from_tail(self, tail: float) -> float:
        return tail / (tail + self.config.half_log10)

    def _value_checks(self, score: float, values: Sequence[float]) -> tuple[float, bool]:
        cfg = self.config
        if not self._channels:
            self._channels = [_ChannelChecks(cfg) for _ in values]
        out_of_range = False
        for checks, value in zip(self._channels, values, strict=True):
            x = float(value)
            if cfg.spatial_tolerance > 0 and checks.spatial(x):
                out_of_range = True
            if checks.record(x):
                out_of_range = True
            tail = checks.update(x)
            if tail > 0.0:
                other = self._from_tail(tail)
                score = max(score, other) if cfg.combine == "max" else 1.0 - (1.0 - score) * (1.0 - other)
        return score, out_of_range

    def _hold(self, score: float) -> float:
        cfg = self.config
        if score >= cfg.decision_level:
            self._hold_left = cfg.hold_rows
            return score
        if self._hold_left > 0:
            self._hold_left -= 1
            return cfg.decision_level
        return score

    def _suppress(self, score: float, average: float) -> float:
        cfg = self.config
        if self._suppress_left > 0:
            self._suppress_left -= 1
            rearm = (
                cfg.suppress_rearm_ratio > 0.0
                and score >= cfg.suppress_level
                and self._suppress_peak > 0.0
                and average > cfg.suppress_rearm_ratio * self._suppress_peak
            )
            if not rearm:
                self._suppress_peak = max(self._suppress_peak, average)
                return score * cfg.suppress_factor
        if cfg.suppress_rows and score >= cfg.suppress_level:
            self._suppress_left = cfg.suppress_rows
            self._suppress_peak = average
        return score


def _ratio(average: float, threshold: float) -> float:
    if average <= 0.0:
        return 0.0
    return average / (average + max(threshold, 1e-12))


class Postprocessor:
    """Per-stream :class:`StreamPostprocessor` states for one model (reset when the model changes)."""

    def __init__(self, config: PostprocessConfig, threshold: float) -> None:
        self.config = config
        self.threshold = threshold
        self._streams: dict[str, StreamPostprocessor] = {}

    def update(self, stream: str, raw: float, values: Sequence[float] | None = None) -> float:
        """``values``: the newest sample of the stream (``Decision.window[-1]``), for the value checks."""
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = StreamPostprocessor(self.config, self.threshold)
        return state.update(raw, values)

    def is_anomaly(self, score: float) -> bool:
        return score >= self.config.decision_level

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)
