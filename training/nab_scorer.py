"""Numenta Anomaly Benchmark (NAB v1.x) scoring, written from its published description.

References: Lavin & Ahmad (2015), "Evaluating Real-time Anomaly Detection Algorithms - the Numenta
Anomaly Benchmark"; Ahmad et al. (2017), Neurocomputing. NAB's own code was read only to pin down
behaviour; nothing here is copied from it. The rules, as NAB v1.x (its "sweeper") applies them:

* A row is a detection when ``anomaly_score >= threshold``.
* The first ``min(floor(0.15 * n_rows), 0.15 * 5000)`` rows of each file are a probationary period:
  they are neither detections nor misses, and a window with no row after it is not scored at all.
* Inside a label window ``[L, R]`` of ``W = R - L + 1`` rows, row ``i`` sits at relative position
  ``p = -(R - i + 1) / W`` (``-1`` at the window start, ``-1/W`` at its end). Only the best (that is
  the earliest) detection of a window counts; it scores ``tpWeight * S(p) / S(-1)``, so a detection
  at the very first row of a window is worth exactly ``tpWeight``. A window without detection scores
  ``-fnWeight``. Further detections in the same window add nothing.
* A detection outside every window is a false positive. Before the first window it scores
  ``-fpWeight``. After a window it sits at ``p = (i - R_prev) / (W_prev - 1)`` and scores
  ``fpWeight * S(p)``, which is negative and close to zero just after the window (a late but
  nearly-right detection costs little).
* ``S(p) = 2 * sigmoid(-5 p) - 1`` with ``sigmoid(x) = 1 / (1 + exp(-x))``, and ``S(p) = -1`` for
  ``p > 3``.
* The corpus score of a profile is the sum of the file scores at ONE threshold for the whole corpus,
  chosen to maximise it. Normalised score = ``100 * (raw - null) / (perfect - null)`` where the null
  detector detects nothing (``-fnWeight`` per window) and the perfect detector detects every window
  at its first row (``tpWeight`` per window).

Our choices where NAB has no defined behaviour: a one-row window uses ``max(W_prev - 1, 1)`` as the
denominator above (NAB divides by zero); windows must be sorted, must not overlap, and must contain at
least one row of the series (NAB silently skips a window whose start timestamp is not a row). Like
NAB, everything is counted in rows, in row order: timestamps only place the windows (see
``_window_rows``), so they need not be strictly increasing (real NAB files repeat an hour at DST).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from training.errors import TrainingError

PROBATIONARY_PERCENT: Final = 0.15
# NAB caps the probationary period at 15 % of 5000 rows, so long files are not penalised more.
_PROBATION_CAP_ROWS: Final = 5000
# Beyond 3 window-widths after a window, a false positive costs the full fpWeight.
_FAR_POSITION: Final = 3.0

Window = tuple[datetime, datetime]
TimestampsLike = Sequence[datetime] | npt.NDArray[np.datetime64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


class NabScoringError(TrainingError, ValueError):
    """The labels, profiles or detector output cannot be scored as given."""


class UndefinedScoreError(NabScoringError):
    """No labelled window in the scored rows: the normalised score (over perfect - null) is undefined."""


@dataclass(frozen=True)
class CostProfile:
    """One NAB application profile (``config/profiles.json`` ``CostMatrix``)."""

    name: str
    tp_weight: float
    fn_weight: float
    fp_weight: float
    # NAB carries tnWeight in its profiles but never uses it in the score; kept so nothing is lost.
    tn_weight: float = 1.0


@dataclass(frozen=True)
class ResultSeries:
    """A detector's output for one data file: one anomaly score per row, rows in time order."""

    timestamps: TimestampsLike
    scores: npt.ArrayLike


@dataclass(frozen=True)
class DetectionSeries:
    """Binary decisions for one data file, as a device with a fixed threshold makes them."""

    timestamps: TimestampsLike
    detections: npt.ArrayLike


@dataclass(frozen=True)
class FileScore:
    """NAB score of one file for one profile, with the counts behind it.

    ``tp``/``fn`` count windows (hit / missed); ``fp`` counts detected rows outside every window
    (each one is penalised). Probationary rows are in none of the counts.
    """

    score: float
    tp: int
    fp: int
    fn: int
    detections_in_windows: int
    scored_rows: int

    @property
    def windows_total(self) -> int:
        return self.tp + self.fn


@dataclass(frozen=True)
class DetectionSummary:
    """Operator-facing view of a set of decisions; ``None`` where a ratio is 0/0."""

    windows_total: int
    windows_hit: int
    detections: int
    detections_in_windows: int
    false_alarms: int
    scored_rows: int
    precision: float | None
    recall: float | None
    false_alarms_per_1k: float | None


@dataclass(frozen=True)
class ProfileResult:
    """Corpus result for one profile. ``threshold`` is ``math.inf`` when detecting nothing is best,
    and ``None`` when fixed decisions were scored instead of a threshold."""

    profile: str
    threshold: float | None
    raw_score: float
    null_score: float
    perfect_score: float
    normalized_score: float
    files: Mapping[str, FileScore]

    @property
    def summary(self) -> DetectionSummary:
        return summarize(self.files)


@dataclass(frozen=True)
class CorpusReport:
    """Threshold-optimised NAB result per profile, as on NAB's scoreboard."""

    profiles: Mapping[str, ProfileResult]


@dataclass(frozen=True)
class FixedThresholdReport:
    """NAB scores and detection counts of decisions made without a threshold sweep."""

    profiles: Mapping[str, ProfileResult]
    summary: DetectionSummary


@dataclass(frozen=True)
class _FilePlan:
    """Everything about one file that does not depend on the detector: built once, scored many times.

    ``window_of_row`` is the window index of a row or -1; ``tp_value`` is ``S(p)/S(-1)`` for rows in a
    window; ``fp_value`` is the unweighted (negative) false-positive value for rows outside windows.
    """

    n_rows: int
    probation: int
    n_windows: int
    window_of_row: IntArray
    tp_value: FloatArray
    fp_value: FloatArray

    @property
    def scored_windows(self) -> IntArray:
        """Windows with at least one row after the probationary period (NAB scores only those)."""
        scored = self.window_of_row[self.probation :]
        return np.unique(scored[scored >= 0])


# ---------------------------------------------------------------------------------------------
# Loading


def load_windows(path: Path | str) -> dict[str, list[Window]]:
    """Read NAB's ``combined_windows.json`` into ``{relative data path: [(start, end), ...]}``."""
    raw = _read_json(Path(path))
    if not isinstance(raw, dict):
        raise NabScoringError(f"{path}: expected a JSON object of file -> windows")
    windows: dict[str, list[Window]] = {}
    for name, items in raw.items():
        if not isinstance(items, list):
            raise NabScoringError(f"{path}: windows of {name!r} must be a list")
        parsed: list[Window] = []
        for item in items:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)):
                raise NabScoringError(f"{path}: window {item!r} of {name!r} is not [start, end]")
            try:
                parsed.append((datetime.fromisoformat(item[0]), datetime.fromisoformat(item[1])))
            except ValueError as exc:
                raise NabScoringError(f"{path}: window {item!r} of {name!r}: {exc}") from exc
        _check_windows(name, parsed)
        windows[name] = parsed
    return windows


def load_profiles(path: Path | str) -> dict[str, CostProfile]:
    """Read NAB's ``config/profiles.json`` (``{name: {"CostMatrix": {tpWeight, ...}}}``)."""
    raw = _read_json(Path(path))
    if not isinstance(raw, dict) or not raw:
        raise NabScoringError(f"{path}: expected a non-empty JSON object of profiles")
    profiles: dict[str, CostProfile] = {}
    for name, body in raw.items():
        matrix = body.get("CostMatrix") if isinstance(body, dict) else None
        if not isinstance(matrix, dict):
            raise NabScoringError(f"{path}: profile {name!r} has no CostMatrix object")
        weights: dict[str, float] = {}
        for key in ("tpWeight", "fnWeight", "fpWeight", "tnWeight"):
            value = matrix.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise NabScoringError(f"{path}: profile {name!r}: {key} must be a number, got {value!r}")
            weights[key] = float(value)
        profiles[name] = make_profile(
            name,
            tp_weight=weights["tpWeight"],
            fn_weight=weights["fnWeight"],
            fp_weight=weights["fpWeight"],
            tn_weight=weights["tnWeight"],
        )
    return profiles


def make_profile(
    name: str, *, tp_weight: float, fn_weight: float, fp_weight: float, tn_weight: float = 1.0
) -> CostProfile:
    """A validated profile: weights are magnitudes (signs come from the scoring rules)."""
    for label, value in (("tp_weight", tp_weight), ("fn_weight", fn_weight), ("fp_weight", fp_weight)):
        if not math.isfinite(value) or value < 0:
            raise NabScoringError(f"profile {name!r}: {label} must be a finite number >= 0, got {value}")
    return CostProfile(name, tp_weight, fn_weight, fp_weight, tn_weight)


def _read_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NabScoringError(f"cannot read {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NabScoringError(f"{path} is not valid JSON: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# The scoring function


def scaled_sigmoid(position: float) -> float:
    """NAB's S(p): about 0.987 at p=-1 (window start), 0 at p=0 (window end), -1 for p > 3."""
    return float(_scaled_sigmoid(np.array([position], dtype=np.float64))[0])


def _scaled_sigmoid(position: FloatArray) -> FloatArray:
    # Clip before exp: far positions are replaced by -1 anyway, and exp must not overflow meanwhile.
    value = 2.0 / (1.0 + np.exp(5.0 * np.minimum(position, _FAR_POSITION))) - 1.0
    return np.where(position > _FAR_POSITION, -1.0, value)


def probationary_rows(n_rows: int, probationary_percent: float = PROBATIONARY_PERCENT) -> int:
    """Number of leading rows NAB ignores: ``min(floor(pct * n), pct * 5000)``, rounded up to a row."""
    if not 0.0 <= probationary_percent < 1.0:
        raise NabScoringError(f"probationary_percent must be in [0, 1), got {probationary_percent}")
    # NAB keeps row i when i >= that bound; for a fractional bound that is the next whole row.
    return min(
        math.floor(probationary_percent * n_rows), math.ceil(probationary_percent * _PROBATION_CAP_ROWS)
    )


# ---------------------------------------------------------------------------------------------
# Per-file scoring


def score_file(
    timestamps: TimestampsLike,
    scores: npt.ArrayLike,
    windows: Sequence[Window],
    threshold: float,
    profile: CostProfile,
    *,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> FileScore:
    """NAB score of one file when every row with ``score >= threshold`` is a detection."""
    plan = _plan_file(timestamps, windows, probationary_percent)
    values = _as_scores(scores, plan.n_rows)
    return _score_plan(plan, values >= threshold, profile)


def score_detections(
    timestamps: TimestampsLike,
    detections: npt.ArrayLike,
    windows: Sequence[Window],
    profile: CostProfile,
    *,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> FileScore:
    """NAB score of one file from binary decisions (1/True = detection)."""
    plan = _plan_file(timestamps, windows, probationary_percent)
    return _score_plan(plan, _as_detections(detections, plan.n_rows), profile)


def _plan_file(
    timestamps: TimestampsLike, windows: Sequence[Window], probationary_percent: float
) -> _FilePlan:
    times = _as_times(timestamps)
    n_rows = len(times)
    _check_windows("series", windows)
    bounds = [_window_rows(times, start, end) for start, end in windows]
    for (_, prev_hi), (lo, _), window in zip(bounds, bounds[1:], windows[1:], strict=False):
        if lo <= prev_hi:
            raise NabScoringError(f"window starting {window[0]} shares rows with the window before it")
    left = np.array([lo for lo, _ in bounds], dtype=np.int64)
    right = np.array([hi for _, hi in bounds], dtype=np.int64)

    window_of_row = np.full(n_rows, -1, dtype=np.int64)
    tp_value = np.zeros(n_rows, dtype=np.float64)
    max_tp = scaled_sigmoid(-1.0)
    for index, (lo, hi) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
        rows = np.arange(lo, hi + 1)
        width = hi - lo + 1
        window_of_row[lo : hi + 1] = index
        tp_value[lo : hi + 1] = _scaled_sigmoid(-(hi - rows + 1) / width) / max_tp

    fp_value = np.full(n_rows, -1.0, dtype=np.float64)
    outside = np.flatnonzero(window_of_row < 0)
    if len(windows) and len(outside):
        # Index of the last window that ended before each outside row (-1: none yet).
        previous = np.searchsorted(right, outside, side="left") - 1
        after = previous >= 0
        prev_right = right[previous[after]]
        prev_width = right[previous[after]] - left[previous[after]] + 1
        position = (outside[after] - prev_right) / np.maximum(prev_width - 1, 1)
        fp_value[outside[after]] = _scaled_sigmoid(position.astype(np.float64))

    return _FilePlan(
        n_rows=n_rows,
        probation=probationary_rows(n_rows, probationary_percent),
        n_windows=len(windows),
        window_of_row=window_of_row,
        tp_value=tp_value,
        fp_value=fp_value,
    )


def _window_rows(times: npt.NDArray[np.datetime64], start: datetime, end: datetime) -> tuple[int, int]:
    """First and last row of a window, by scanning rows in order as NAB does.

    The window opens at the first row at or after ``start`` and closes at the first later row that
    reaches ``end`` (that row included only if it is exactly ``end``). With label timestamps that are
    rows this is NAB's exact lookup; it also copes with real NAB files, whose timestamps repeat or step
    back around daylight-saving changes, and with series that do not contain the label timestamps.
    """
    start64, end64 = np.datetime64(start, "us"), np.datetime64(end, "us")
    opened = np.flatnonzero(times >= start64)
    if len(opened):
        lo = int(opened[0])
        reached = np.flatnonzero(times[lo:] >= end64)
        if not len(reached):
            return lo, len(times) - 1
        hi = lo + int(reached[0])
        if times[hi] > end64:
            hi -= 1
        if hi >= lo:
            return lo, hi
    raise NabScoringError(f"window {start} .. {end} contains no row of the series")


def _score_plan(plan: _FilePlan, detected: BoolArray, profile: CostProfile) -> FileScore:
    scored = np.zeros(plan.n_rows, dtype=np.bool_)
    scored[plan.probation :] = True
    active = detected & scored
    in_window = plan.window_of_row >= 0

    false_positive = active & ~in_window
    score = profile.fp_weight * float(plan.fp_value[false_positive].sum())

    hit_rows = np.flatnonzero(active & in_window)
    # Earliest detection per window has the highest value; max() states that without relying on order.
    best = np.full(plan.n_windows, -np.inf)
    np.maximum.at(best, plan.window_of_row[hit_rows], plan.tp_value[hit_rows])
    scored_windows = plan.scored_windows
    hits = best[scored_windows]
    tp = int(np.isfinite(hits).sum())
    fn = len(scored_windows) - tp
    score += profile.tp_weight * float(hits[np.isfinite(hits)].sum()) - profile.fn_weight * fn

    return FileScore(
        score=score,
        tp=tp,
        fp=int(false_positive.sum()),
        fn=fn,
        detections_in_windows=len(hit_rows),
        scored_rows=plan.n_rows - plan.probation,
    )


# ---------------------------------------------------------------------------------------------
# Corpus scoring


def score_corpus(
    results: Mapping[str, ResultSeries],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
    *,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> CorpusReport:
    """NAB scoreboard numbers: per profile, one threshold for the whole corpus that maximises the raw
    score (ties go to the highest threshold, as in NAB), then raw, null, perfect and normalised score.

    ``results`` must cover exactly the files of ``windows``: a missing file would dodge its misses.
    """
    names, plans = _plan_corpus(results, windows, profiles, probationary_percent)
    values = {name: _as_scores(results[name].scores, plans[name].n_rows) for name in names}
    sweep = _sweep(plans, values, names)

    report: dict[str, ProfileResult] = {}
    for profile_name, profile in profiles.items():
        totals = (
            profile.tp_weight * sweep.tp_sum
            - profile.fn_weight * (sweep.n_windows - sweep.windows_hit)
            + profile.fp_weight * sweep.fp_sum
        )
        # argmax takes the first maximum, i.e. the highest threshold among equally good ones.
        threshold = float(sweep.thresholds[int(np.argmax(totals))])
        files = {name: _score_plan(plans[name], values[name] >= threshold, profile) for name in names}
        report[profile_name] = _profile_result(profile, threshold, files)
    return CorpusReport(profiles=report)


def fixed_threshold_summary(
    decisions: Mapping[str, DetectionSeries],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
    *,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> DetectionSummary:
    """The counts of :func:`fixed_threshold_report` (hits, false alarms, precision, ...) alone: defined
    even when no file has a labelled window (a corpus of normal series), where the NAB score is not."""
    names, plans, detected = _fixed_plans(decisions, windows, profiles, probationary_percent)
    profile = next(iter(profiles.values()))
    return summarize({name: _score_plan(plans[name], detected[name], profile) for name in names})


def fixed_threshold_report(
    decisions: Mapping[str, DetectionSeries],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
    *,
    probationary_percent: float = PROBATIONARY_PERCENT,
) -> FixedThresholdReport:
    """Score decisions that were made with per-file thresholds fixed in advance (as on a device in the
    field, which cannot sweep thresholds against labels). Same NAB rules, including the probation."""
    names, plans, detected = _fixed_plans(decisions, windows, profiles, probationary_percent)
    report = {
        profile_name: _profile_result(
            profile, None, {name: _score_plan(plans[name], detected[name], profile) for name in names}
        )
        for profile_name, profile in profiles.items()
    }
    first = next(iter(report.values()))
    return FixedThresholdReport(profiles=report, summary=first.summary)


def _fixed_plans(
    decisions: Mapping[str, DetectionSeries],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
    probationary_percent: float,
) -> tuple[list[str], dict[str, _FilePlan], dict[str, BoolArray]]:
    """The files, their plans and their fixed decisions as detections (both fixed-decision reports)."""
    names, plans = _plan_corpus(decisions, windows, profiles, probationary_percent)
    detected = {name: _as_detections(decisions[name].detections, plans[name].n_rows) for name in names}
    return names, plans, detected


def _plan_corpus(
    series: Mapping[str, ResultSeries | DetectionSeries],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
    probationary_percent: float,
) -> tuple[list[str], dict[str, _FilePlan]]:
    """Both reports' checks (the same files on both sides, some profile) and each file's plan, by name."""
    _check_same_files(series.keys(), windows.keys())
    if not profiles:
        raise NabScoringError("no profiles to score")
    names = sorted(series)
    plans = {name: _plan_file(series[name].timestamps, windows[name], probationary_percent) for name in names}
    return names, plans


def summarize(files: Mapping[str, FileScore]) -> DetectionSummary:
    """Window recall, row precision and false alarms per 1,000 scored rows over files."""
    windows_total = sum(f.windows_total for f in files.values())
    windows_hit = sum(f.tp for f in files.values())
    in_windows = sum(f.detections_in_windows for f in files.values())
    false_alarms = sum(f.fp for f in files.values())
    scored_rows = sum(f.scored_rows for f in files.values())
    detections = in_windows + false_alarms
    return DetectionSummary(
        windows_total=windows_total,
        windows_hit=windows_hit,
        detections=detections,
        detections_in_windows=in_windows,
        false_alarms=false_alarms,
        scored_rows=scored_rows,
        precision=in_windows / detections if detections else None,
        recall=windows_hit / windows_total if windows_total else None,
        false_alarms_per_1k=1000.0 * false_alarms / scored_rows if scored_rows else None,
    )


def _profile_result(
    profile: CostProfile, threshold: float | None, files: dict[str, FileScore]
) -> ProfileResult:
    n_windows = sum(f.windows_total for f in files.values())
    null = -profile.fn_weight * n_windows
    perfect = profile.tp_weight * n_windows
    if perfect == null:
        raise UndefinedScoreError(
            f"profile {profile.name!r}: the normalised score is undefined "
            f"({n_windows} scored windows, tp_weight + fn_weight = {profile.tp_weight + profile.fn_weight})"
        )
    raw = math.fsum(f.score for f in files.values())
    return ProfileResult(
        profile=profile.name,
        threshold=threshold,
        raw_score=raw,
        null_score=null,
        perfect_score=perfect,
        normalized_score=100.0 * (raw - null) / (perfect - null),
        files=files,
    )


@dataclass(frozen=True)
class _Sweep:
    """Profile-independent ingredients of the corpus score at every candidate threshold.

    Index k is threshold ``thresholds[k]`` (descending; index 0 is +inf = no detection). A profile's
    score there is ``tp*tp_sum[k] - fn*(n_windows - windows_hit[k]) + fp*fp_sum[k]``.
    """

    thresholds: FloatArray
    tp_sum: FloatArray
    windows_hit: FloatArray
    fp_sum: FloatArray
    n_windows: int


def _sweep(plans: Mapping[str, _FilePlan], values: Mapping[str, FloatArray], names: Sequence[str]) -> _Sweep:
    """Lower the threshold through every distinct score once, updating the score incrementally.

    The best detection of a window does not depend on the profile (all weights are >= 0), so one pass
    serves every profile: O(n log n) for the sort, then O(n) work.
    """
    scores_parts: list[FloatArray] = []
    window_parts: list[IntArray] = []
    tp_parts: list[FloatArray] = []
    fp_parts: list[FloatArray] = []
    offset = 0
    n_windows = 0
    for name in names:
        plan = plans[name]
        keep = slice(plan.probation, None)
        local = plan.window_of_row[keep]
        # Windows get corpus-wide ids; windows with no scored row never appear in `local`.
        window_parts.append(np.where(local >= 0, local + offset, -1))
        scores_parts.append(values[name][keep])
        tp_parts.append(plan.tp_value[keep])
        fp_parts.append(plan.fp_value[keep])
        offset += plan.n_windows
        n_windows += len(plan.scored_windows)

    scores = np.concatenate(scores_parts) if scores_parts else np.zeros(0)
    window = np.concatenate(window_parts) if window_parts else np.zeros(0, dtype=np.int64)
    tp_value = np.concatenate(tp_parts) if tp_parts else np.zeros(0)
    fp_value = np.concatenate(fp_parts) if fp_parts else np.zeros(0)

    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_window = window[order]

    fp_step = np.where(sorted_window < 0, fp_value[order], 0.0)
    tp_step = np.zeros(len(order))
    hit_step = np.zeros(len(order))
    best = np.zeros(offset)
    seen = np.zeros(offset, dtype=np.bool_)
    sorted_tp = tp_value[order]
    # Only in-window rows (about a tenth of NAB) need this loop; a window's value only ever rises.
    for k in np.flatnonzero(sorted_window >= 0).tolist():
        w = int(sorted_window[k])
        value = float(sorted_tp[k])
        if not seen[w]:
            seen[w] = True
            best[w] = value
            tp_step[k] = value
            hit_step[k] = 1.0
        elif value > best[w]:
            tp_step[k] = value - best[w]
            best[w] = value

    # A threshold equal to a score includes every row with that score: read totals at group ends.
    group_end = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], len(order) > 0))
    zero = np.zeros(1)
    return _Sweep(
        thresholds=np.concatenate(([np.inf], sorted_scores[group_end])),
        tp_sum=np.concatenate((zero, np.cumsum(tp_step)[group_end])),
        windows_hit=np.concatenate((zero, np.cumsum(hit_step)[group_end])),
        fp_sum=np.concatenate((zero, np.cumsum(fp_step)[group_end])),
        n_windows=n_windows,
    )


# ---------------------------------------------------------------------------------------------
# Validation


def _check_windows(name: str, windows: Sequence[Window]) -> None:
    for start, end in windows:
        if end < start:
            raise NabScoringError(f"{name}: window ends before it starts: {start} .. {end}")
    for (_, prev_end), (start, _) in itertools.pairwise(windows):
        if start <= prev_end:
            raise NabScoringError(
                f"{name}: windows must be sorted and must not overlap ({prev_end} >= {start})"
            )


def _check_same_files(given: Iterable[str], labelled: Iterable[str]) -> None:
    given_set = set(given)
    labelled_set = set(labelled)
    missing = sorted(labelled_set - given_set)
    extra = sorted(given_set - labelled_set)
    if missing or extra:
        raise NabScoringError(
            f"results and windows must cover the same files; missing={missing} extra={extra}"
        )


def _as_times(timestamps: TimestampsLike) -> npt.NDArray[np.datetime64]:
    times = np.asarray(timestamps, dtype="datetime64[us]")
    if times.ndim != 1:
        raise NabScoringError(f"timestamps must be one-dimensional, got shape {times.shape}")
    if bool(np.any(np.isnat(times))):
        raise NabScoringError("timestamps must not contain NaT")
    return times


def _as_scores(scores: npt.ArrayLike, n_rows: int) -> FloatArray:
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (n_rows,):
        raise NabScoringError(f"expected {n_rows} scores (one per timestamp), got shape {values.shape}")
    if not bool(np.all(np.isfinite(values))):
        raise NabScoringError("anomaly scores must be finite (no NaN or infinity)")
    return values


def _as_detections(detections: npt.ArrayLike, n_rows: int) -> BoolArray:
    values = np.asarray(detections)
    if values.shape != (n_rows,):
        raise NabScoringError(f"expected {n_rows} decisions (one per timestamp), got shape {values.shape}")
    if values.dtype != np.bool_ and not bool(np.all((values == 0) | (values == 1))):
        raise NabScoringError("decisions must be 0/1 or booleans")
    return values.astype(np.bool_)
