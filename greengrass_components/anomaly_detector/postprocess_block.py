"""The post-processing of ``postprocess.py``, a whole block of one stream's windows at a time (numpy).

:class:`~.postprocess.StreamPostprocessor` is the reference: plain Python, one window per call, ~4 us per
window with NAB's value checks. On a device that is most of the component's time (the model itself
costs ~0.03 us per window), so a micro-batch's windows of one stream go through this vectorised twin
instead. It computes the same scores from the same state, in the same order (moving averages and
history statistics from prefix sums, the running range with ``maximum.accumulate``, the damping and hold
rules with one step per alarm, not per window); ``-log10 Q(z)`` uses the formulas of
:func:`~.postprocess.log10_tail`, only for windows whose z is positive. Results agree with the
reference to rounding (tested to 1e-9 on NAB series fed in blocks of every size). One exception: when a
seasonal reference window is exactly constant, its std is rounding noise in both (each its own) and the
seasonal statistic divides by it, so the two disagree until that stretch leaves the likelihood history.

Settings the twin does not implement (``level_windows``, ``variance_window``, ``combine="union"``) make
:func:`supports` false, and the caller keeps the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .postprocess import PostprocessConfig

# Settings implemented here; any other setting must keep its default for the twin to apply.
_SUPPORTED = frozenset(
    {
        "method",
        "short_window",
        "long_window",
        "warmup",
        "log_scores",
        "min_std",
        "half_log10",
        "suppress_level",
        "suppress_rows",
        "suppress_factor",
        "suppress_rearm_ratio",
        "decision_level",
        "spatial_tolerance",
        "record_window",
        "record_history",
        "record_min_history",
        "seasonal_lag",
        "reference_window",
        "value_short_window",
        "hold_rows",
        "long_fraction",
        "long_window_max",
    }
)


def supports(config: PostprocessConfig) -> bool:
    """Whether :class:`BlockPostprocessor` computes exactly what the reference does for ``config``."""
    defaults = PostprocessConfig()
    return all(
        getattr(config, f.name) == getattr(defaults, f.name)
        for f in fields(config)
        if f.name not in _SUPPORTED
    )


Floats = NDArray[np.float64]

# numpy has no erfc; math.erfc mapped over an array is ~10x cheaper than a Python call per value.
_ERFC = np.frompyfunc(math.erfc, 1, 1)
_ASYMPTOTIC_Z = 30.0


def log10_tails(z: Floats) -> Floats:
    """:func:`~.postprocess.log10_tail` of every (positive) ``z``, vectorised, same formulas."""
    q = 0.5 * np.asarray(_ERFC(z / math.sqrt(2.0)), dtype=np.float64)
    far = (z >= _ASYMPTOTIC_Z) | (q <= 0.0)
    with np.errstate(divide="ignore"):
        out = -np.log10(q)
    if far.any():
        zf = z[far]
        out[far] = (0.5 * zf * zf + np.log(zf * math.sqrt(2.0 * math.pi))) / math.log(10.0)
    return out


@dataclass
class _TailState:
    """One likelihood's memory: its last ``short`` inputs and the history of moving averages."""

    short: Floats = field(default_factory=lambda: np.empty(0))
    history: Floats = field(default_factory=lambda: np.empty(0))
    window: int = 0  # the history length in force (it only grows)
    shift: float | None = None  # the first average: sums are taken of values centred on it


def _window_ranges(
    values: Floats, starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> tuple[Floats, Floats]:
    """Min and max of ``values[starts[i] : ends[i] + 1]`` for windows whose starts and ends both move
    forward (never back) from one window to the next, in O(len) numpy work plus one pass over the part
    every window of a chunk shares."""
    n = starts.shape[0]
    lows, highs = np.empty(n), np.empty(n)
    i = 0
    while i < n:
        # The windows i..j share values[starts[j] : ends[i] + 1]; the rest of window t is a suffix of
        # values[starts[i] : starts[j]] and a prefix of values[ends[i] + 1 : ends[t] + 1].
        j = i + int(np.searchsorted(starts[i:], ends[i], side="right")) - 1
        shared = values[starts[j] : ends[i] + 1]
        left = values[starts[i] : starts[j]]
        right = values[ends[i] + 1 : ends[j] + 1]
        lo, hi = float(shared.min()), float(shared.max())
        left_lo = np.append(np.minimum.accumulate(left[::-1])[::-1], np.inf)
        left_hi = np.append(np.maximum.accumulate(left[::-1])[::-1], -np.inf)
        right_lo = np.concatenate([[np.inf], np.minimum.accumulate(right)])
        right_hi = np.concatenate([[-np.inf], np.maximum.accumulate(right)])
        a = starts[i : j + 1] - starts[i]
        b = ends[i : j + 1] - ends[i]
        lows[i : j + 1] = np.minimum(np.minimum(left_lo[a], right_lo[b]), lo)
        highs[i : j + 1] = np.maximum(np.maximum(left_hi[a], right_hi[b]), hi)
        i = j + 1
    return lows, highs


def _moving_averages(previous: Floats, xs: Floats, window: int) -> tuple[Floats, Floats]:
    """Each new value's average over the last ``window`` inputs, itself included (fewer at the start),
    as the reference's running ``deque(maxlen=window)`` sum gives it; and the inputs to keep for the
    next block (``previous`` holds the last ``window - 1`` or fewer)."""
    joined = np.concatenate([previous, xs])
    sums = np.concatenate([[0.0], np.cumsum(joined)])
    ends = np.arange(previous.shape[0] + 1, joined.shape[0] + 1)
    counts = np.minimum(ends, window)
    return (sums[ends] - sums[ends - counts]) / counts, joined[-window:].copy()


def _tails(
    state: _TailState,
    xs: Floats,
    *,
    short_window: int,
    windows: NDArray[np.int64] | int,
    min_std: float,
    min_history: int,
) -> tuple[Floats, Floats]:
    """``-log10 Q(z)`` of each new value's moving average against the averages before it, as ``_Tail``,
    and those moving averages.

    ``windows``: the history length in force after each value (non-decreasing), or one length for all.
    """
    k = xs.shape[0]
    averages, state.short = _moving_averages(state.short, xs, short_window)
    # History before value i: the averages kept after value i - 1, i.e. the last min(window, available).
    n0 = state.history.shape[0]
    lengths = np.asarray(windows, dtype=np.int64)
    before = np.empty(k, dtype=np.int64)
    if lengths.ndim == 0:
        before.fill(int(lengths))
    else:
        before[0] = state.window
        before[1:] = lengths[:-1]
    available = n0 + np.arange(k)
    h = np.minimum(before, available)
    # Window i is combined[dropped_i : n0 + i] of combined = history + this block's averages; history is
    # exactly what the window kept, so dropped_0 = 0 and the dropped prefix is at most k long. Sums come
    # from the history's totals plus prefix sums over O(k) values, never over the whole history. Values
    # are centred on the stream's first average: the variance survives large offsets.
    if state.shift is None:
        state.shift = float(averages[0])
    centred = np.concatenate([state.history - state.shift, averages - state.shift])
    head, block = centred[:n0], centred[n0:]
    block_sq = block * block
    stop_sum = float(head.sum()) + np.concatenate([[0.0], np.cumsum(block)[:-1]])
    stop_sq = float(np.dot(head, head)) + np.concatenate([[0.0], np.cumsum(block_sq)[:-1]])
    dropped = available - h
    front = centred[: int(dropped.max())]
    front_sum = np.concatenate([[0.0], np.cumsum(front)])
    front_sq = np.concatenate([[0.0], np.cumsum(front * front)])
    out = np.zeros(k)
    ok = h >= max(min_history, 2)
    every = bool(ok.all())
    if every or ok.any():
        sel = slice(None) if every else ok
        hh = h[sel].astype(np.float64)
        mean_c = (stop_sum[sel] - front_sum[dropped[sel]]) / hh
        var = (stop_sq[sel] - front_sq[dropped[sel]]) / hh - mean_c * mean_c
        std = np.maximum(np.sqrt(np.maximum(var, 0.0)), min_std)
        z = (block[sel] - mean_c) / std
        positive = z > 0
        tails = np.zeros(z.shape[0])
        tails[positive] = log10_tails(z[positive])
        out[sel] = tails
    hist = np.concatenate([state.history, averages])
    final = int(lengths) if lengths.ndim == 0 else int(lengths[-1])
    state.window = max(state.window, final)
    state.history = hist[-min(state.window, hist.shape[0]) :].copy() if hist.shape[0] else hist
    return out, averages


@dataclass
class _ChannelState:
    low: float = math.inf
    high: float = -math.inf
    values: Floats = field(default_factory=lambda: np.empty(0))  # the last reference/lag values
    count: int = 0
    seasonal: _TailState = field(default_factory=_TailState)
    record_values: Floats = field(default_factory=lambda: np.empty(0))  # the last window + history - 1
    record_count: int = 0


@dataclass
class _StreamState:
    seen: int = 0
    raw: _TailState = field(default_factory=_TailState)
    ratio_short: Floats = field(default_factory=lambda: np.empty(0))
    channels: list[_ChannelState] = field(default_factory=list)
    suppress_left: int = 0
    suppress_peak: float = 0.0
    hold_left: int = 0


class BlockPostprocessor:
    """Per-stream state and ``update_block``: the vectorised equivalent of ``Postprocessor.update``."""

    def __init__(self, config: PostprocessConfig, threshold: float) -> None:
        if not supports(config):
            raise ValueError("settings beyond the vectorised subset: use postprocess.Postprocessor")
        self.config = config
        self.threshold = threshold
        self._streams: dict[str, _StreamState] = {}
        self._raw_threshold = math.log1p(threshold) if config.log_scores else threshold
        self._raw_threshold = max(self._raw_threshold, 1e-12)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)

    def is_anomaly(self, score: float) -> bool:
        return score >= self.config.decision_level

    def update_block(
        self, stream: str, raw: NDArray[np.floating[Any]], values: NDArray[np.floating[Any]] | None
    ) -> Floats:
        """Scores in ``[0, 1]`` for ``raw`` ``[k]`` (time order); ``values``: newest samples ``[k, c]``."""
        cfg = self.config
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _StreamState()
        k = raw.shape[0]
        if k == 0:
            return np.zeros(0)
        checks_values = values is not None and cfg.uses_values
        if checks_values and values is not None and state.channels and values.shape[1] != len(state.channels):
            raise ValueError(f"expected {len(state.channels)} values, got {values.shape[1]}")
        x = np.asarray(raw, dtype=np.float64)
        x = np.log1p(np.maximum(x, 0.0)) if cfg.log_scores else x
        seen = state.seen + 1 + np.arange(k, dtype=np.int64)
        if cfg.method == "ratio":
            score, average = self._ratio(state, x)
        else:
            longer = np.minimum((cfg.long_fraction * seen).astype(np.int64), cfg.long_window_max)
            if state.raw.window == 0:
                state.raw.window = cfg.long_window
            windows = np.maximum.accumulate(np.maximum(longer, state.raw.window))
            tail, average = _tails(
                state.raw,
                x,
                short_window=cfg.short_window,
                windows=windows,
                min_std=cfg.min_std,
                min_history=2,
            )
            score = tail / (tail + cfg.half_log10)
        out_of_range = np.zeros(k, dtype=np.bool_)
        if checks_values and values is not None:
            score, out_of_range = self._value_checks(state, score, np.asarray(values, dtype=np.float64))
        state.seen += k
        score = np.where(out_of_range, 1.0, score)
        live = seen > cfg.warmup
        out = np.zeros(k)
        if live.any():
            first = int(np.argmax(live))
            out[first:] = self._hold(state, self._suppress(state, score[first:], average[first:]))
        return out

    def _ratio(self, state: _StreamState, x: Floats) -> tuple[Floats, Floats]:
        average, state.ratio_short = _moving_averages(state.ratio_short, x, self.config.short_window)
        positive = np.maximum(average, 0.0)
        return np.where(average > 0.0, positive / (positive + self._raw_threshold), 0.0), average

    def _value_checks(
        self, state: _StreamState, score: Floats, values: Floats
    ) -> tuple[Floats, NDArray[np.bool_]]:
        cfg = self.config
        if not state.channels:
            state.channels = [_ChannelState() for _ in range(values.shape[1])]
        out_of_range = np.zeros(score.shape[0], dtype=np.bool_)
        for index, channel in enumerate(state.channels):
            column = values[:, index]
            if cfg.spatial_tolerance > 0:
                out_of_range |= self._spatial(channel, column)
            if cfg.record_window:
                out_of_range |= self._record(channel, column)
            tail = self._seasonal(channel, column)
            if tail is not None:
                score = np.maximum(score, np.where(tail > 0.0, tail / (tail + cfg.half_log10), 0.0))
        return score, out_of_range

    def _spatial(self, channel: _ChannelState, column: Floats) -> NDArray[np.bool_]:
        """Outside the range of every earlier value by more than the tolerance (then the range learns it)."""
        highs = np.maximum.accumulate(np.concatenate([[channel.high], column]))
        lows = np.minimum.accumulate(np.concatenate([[channel.low], column]))
        high, low = highs[:-1], lows[:-1]
        with np.errstate(invalid="ignore"):
            margin = self.config.spatial_tolerance * (high - low)
            outside = (high > low) & ((column > high + margin) | (column < low - margin))
        channel.high, channel.low = float(highs[-1]), float(lows[-1])
        return outside

    def _record(self, channel: _ChannelState, column: Floats) -> NDArray[np.bool_]:
        """Whether the last ``record_window`` values' mean leaves the range of the history before them."""
        cfg = self.config
        w, h = cfg.record_window, cfg.record_history
        k = column.shape[0]
        joined = np.concatenate([channel.record_values, column])
        n0 = channel.record_values.shape[0]
        seen = channel.record_count + 1 + np.arange(k)  # values seen after each new one
        channel.record_count += k
        channel.record_values = joined[-(w + h - 1) :].copy()
        pos = n0 + np.arange(k)  # each new value's index in ``joined``
        counts = np.minimum(seen, w)
        # Each window's sum on its own (zeros before the stream's first value): prefix sums over a long
        # block would carry a huge value's rounding error into every later window's mean.
        before = min(n0, w - 1)
        padded = np.concatenate([np.zeros(w - 1 - before), joined[n0 - before :]])
        means = np.convolve(padded, np.ones(w), "valid") / counts
        history = np.minimum(np.maximum(seen - w, 0), h)
        flags = np.zeros(k, dtype=np.bool_)
        live = np.flatnonzero(history >= cfg.record_min_history)
        if live.size == 0:
            return flags
        ends = pos[live] - w  # each history's last index in ``joined``; it starts history - 1 before
        lows, highs = _window_ranges(joined, ends - history[live] + 1, ends)
        tolerance = 1e-9 * (np.abs(lows) + np.abs(highs) + 1.0)
        m = means[live]
        flags[live] = (m > highs + tolerance) | (m < lows - tolerance)
        return flags

    def _seasonal(self, channel: _ChannelState, column: Floats) -> Floats | None:
        """``|x_t - x_{t-lag}|`` in reference-std units, through its own likelihood (None when off)."""
        cfg = self.config
        lag, ref = cfg.seasonal_lag, cfg.reference_window
        if not lag:
            return None
        k = column.shape[0]
        keep = max(ref, lag + 1)
        joined = np.concatenate([channel.values, column])
        n_before = channel.values.shape[0]
        counts = channel.count + 1 + np.arange(k)
        channel.count += k
        channel.values = joined[-keep:].copy()
        tails = np.zeros(k)
        active = (counts >= ref) & (counts >= lag + 1)
        if not active.any():
            return tails
        first = int(np.argmax(active))
        pos = n_before + np.arange(first, k)  # index of each active value in ``joined``
        shift = joined[0]
        centred = joined - shift
        p1 = np.concatenate([[0.0], np.cumsum(centred)])
        p2 = np.concatenate([[0.0], np.cumsum(centred * centred)])
        mean_c = (p1[pos + 1] - p1[pos + 1 - ref]) / ref
        var = (p2[pos + 1] - p2[pos + 1 - ref]) / ref - mean_c * mean_c
        std = np.sqrt(np.maximum(var, 0.0))
        mean = mean_c + shift
        unit = np.maximum(std, 1e-9 * (np.abs(mean) + 1.0))
        statistic = np.abs(joined[pos] - joined[pos - lag]) / unit
        tails[first:], _ = _tails(
            channel.seasonal,
            statistic,
            short_window=cfg.value_short_window,
            windows=cfg.long_window,
            min_std=cfg.min_std,
            min_history=cfg.warmup,
        )
        return tails

    def _suppress(self, state: _StreamState, score: Floats, average: Floats) -> Floats:
        """After a score >= suppress_level, the next suppress_rows scores are multiplied by the factor,
        unless a row re-arms (its short raw average > suppress_rearm_ratio x the positive peak since the
        alarm)."""
        cfg = self.config
        out = score.copy()
        k = out.shape[0]
        pos = 0
        while pos < k:
            if state.suppress_left > 0:
                stop = min(k, pos + state.suppress_left)
                span = slice(pos, stop)
                rearm_at = self._rearm(state, out[span], average[span])
                if rearm_at is None:
                    out[span] *= cfg.suppress_factor
                    if cfg.suppress_rearm_ratio > 0.0:
                        state.suppress_peak = max(state.suppress_peak, float(average[span].max()))
                    state.suppress_left -= stop - pos
                    pos = stop
                    continue
                out[pos : pos + rearm_at] *= cfg.suppress_factor
                pos += rearm_at  # this row passes and starts the damping again, below
            elif not cfg.suppress_rows:
                break
            else:
                hits = np.flatnonzero(out[pos:] >= cfg.suppress_level)
                if hits.size == 0:
                    break
                pos += int(hits[0])
            state.suppress_left = cfg.suppress_rows
            state.suppress_peak = float(average[pos])
            pos += 1
        return out

    def _rearm(self, state: _StreamState, score: Floats, average: Floats) -> int | None:
        """The first damped row of the span that re-arms, or None."""
        ratio = self.config.suppress_rearm_ratio
        if ratio <= 0.0:
            return None
        # The peak a row is compared with: every average since the alarm, up to the row before it.
        peaks = np.maximum.accumulate(np.concatenate([[state.suppress_peak], average[:-1]]))
        rearms = (score >= self.config.suppress_level) & (peaks > 0.0) & (average > ratio * peaks)
        hits = np.flatnonzero(rearms)
        return int(hits[0]) if hits.size else None

    def _hold(self, state: _StreamState, score: Floats) -> Floats:
        """After a score >= decision_level, lower scores are raised to it for the next hold_rows rows."""
        cfg = self.config
        if not cfg.hold_rows:
            return score
        k = score.shape[0]
        index = np.arange(k)
        alarm = score >= cfg.decision_level
        # The last alarm at or before each row; a hold carried in acts as an alarm before the block.
        carried = -(cfg.hold_rows - state.hold_left) - 1 if state.hold_left > 0 else -(1 << 40)
        last = np.maximum.accumulate(np.where(alarm, index, carried))
        held = ~alarm & (index - last <= cfg.hold_rows)
        state.hold_left = max(0, cfg.hold_rows - (k - 1 - int(last[-1])))
        return np.where(held, cfg.decision_level, score)
