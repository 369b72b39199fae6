"""NAB scorer: hand-checked cases, a literal reference implementation, and the real NAB label files.

Notation in the comments: S(p) = 2 / (1 + exp(5 p)) - 1 (= 2*sigmoid(-5p) - 1 = -tanh(2.5 p)),
S(-1) = tanh(2.5) = 0.98661429815. A window [L, R] has W = R - L + 1 rows; a detection at row i in it
sits at p = -(R - i + 1) / W and scores tpWeight * S(p) / S(-1); a false positive after it sits at
p = (i - R) / (W - 1) and scores fpWeight * S(p).
"""

import csv
import math
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from training.nab_scorer import (
    CostProfile,
    DetectionSeries,
    NabScoringError,
    ResultSeries,
    fixed_threshold_report,
    load_profiles,
    load_windows,
    make_profile,
    probationary_rows,
    scaled_sigmoid,
    score_corpus,
    score_detections,
    score_file,
)

NAB_ROOT = Path("/work/shared/data/nab")
T0 = datetime(2024, 1, 1)
STANDARD = make_profile("standard", tp_weight=1.0, fn_weight=1.0, fp_weight=0.11)
LOW_FP = make_profile("reward_low_FP_rate", tp_weight=1.0, fn_weight=1.0, fp_weight=0.22)
LOW_FN = make_profile("reward_low_FN_rate", tp_weight=1.0, fn_weight=2.0, fp_weight=0.11)
PROFILES = {p.name: p for p in (STANDARD, LOW_FP, LOW_FN)}


def stamps(n: int) -> list[datetime]:
    return [T0 + timedelta(minutes=5 * i) for i in range(n)]


def window(first_row: int, last_row: int) -> tuple[datetime, datetime]:
    return stamps(last_row + 1)[first_row], stamps(last_row + 1)[last_row]


def one_hot(n: int, *rows: int) -> np.ndarray:
    out = np.zeros(n)
    out[list(rows)] = 1.0
    return out


# The common toy file: 30 rows, one window on rows 10..14 (W = 5), no probation.
N = 30
WIN = [window(10, 14)]


def toy(*rows: int, profile: CostProfile = STANDARD) -> float:
    return score_file(stamps(N), one_hot(N, *rows), WIN, 0.5, profile, probationary_percent=0.0).score


# --- the scoring function -------------------------------------------------------------------------


def test_scaled_sigmoid_matches_the_published_anchor_points():
    # NAB's docstring anchors: S(-1) = 2*sigmoid(5) - 1 = 0.98661, S(-0.5) = 0.84828, S(0) = 0,
    # S(1) = -0.98661, and -1 past three window widths.
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661429815, abs=1e-10)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828363995, abs=1e-10)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661429815, abs=1e-10)
    assert scaled_sigmoid(3.0) == pytest.approx(-0.99999938820, abs=1e-10)
    assert scaled_sigmoid(3.0001) == -1.0


@pytest.mark.parametrize(
    ("n_rows", "expected"),
    [(0, 0), (10, 1), (100, 15), (4999, 749), (5000, 750), (22695, 750)],
)
def test_probationary_period_is_15_percent_capped_at_750_rows(n_rows, expected):
    # min(floor(0.15 n), 0.15 * 5000): floor(0.15 * 4999) = floor(749.85) = 749; the cap is 750.
    assert probationary_rows(n_rows) == expected


def test_probationary_percent_out_of_range_is_rejected():
    with pytest.raises(NabScoringError, match=r"probationary_percent must be in \[0, 1\), got 1.5"):
        probationary_rows(10, 1.5)


# --- one file, hand-computed ------------------------------------------------------------------------


def test_detection_at_window_start_scores_exactly_tp_weight():
    # p = -(14 - 10 + 1) / 5 = -1 -> S(-1) / S(-1) = 1, times tpWeight 1.0.
    result = score_file(stamps(N), one_hot(N, 10), WIN, 0.5, STANDARD, probationary_percent=0.0)
    assert result.score == pytest.approx(1.0, abs=1e-12)
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    assert result.detections_in_windows == 1
    assert result.scored_rows == N


def test_detection_at_window_end_scores_the_sigmoid_of_minus_one_over_width():
    # p = -(14 - 14 + 1) / 5 = -0.2 -> S(-0.2) = tanh(0.5) = 0.4621171573; / 0.9866142982 = 0.4683868439.
    assert toy(14) == pytest.approx(0.4683868439, abs=1e-9)


def test_detection_just_after_window_is_a_small_weighted_false_positive():
    # Row 15: p = (15 - 14) / (5 - 1) = 0.25 -> S = -tanh(0.625) = -0.5545997223;
    # times fpWeight 0.11 = -0.0610059695; the window is missed: -1.0. Total -1.0610059695.
    result = score_file(stamps(N), one_hot(N, 15), WIN, 0.5, STANDARD, probationary_percent=0.0)
    assert result.score == pytest.approx(-1.0610059695, abs=1e-9)
    assert (result.tp, result.fp, result.fn) == (0, 1, 1)


def test_false_positive_far_after_window_costs_full_fp_weight():
    # Row 27: p = 13 / 4 = 3.25 > 3 -> S = -1 -> -0.11; plus the missed window -1.0.
    assert toy(27) == pytest.approx(-1.11, abs=1e-12)


def test_false_positive_before_any_window_costs_full_fp_weight():
    # Row 3 precedes every window: -fpWeight = -0.11; the window is missed: -1.0.
    assert toy(3) == pytest.approx(-1.11, abs=1e-12)
    assert toy(3, profile=LOW_FP) == pytest.approx(-1.22, abs=1e-12)


def test_missed_window_costs_fn_weight():
    assert toy() == pytest.approx(-1.0, abs=1e-12)
    assert toy(profile=LOW_FN) == pytest.approx(-2.0, abs=1e-12)


def test_only_the_first_detection_in_a_window_counts():
    # Row 12: p = -(14 - 12 + 1) / 5 = -0.6 -> S = tanh(1.5) = 0.9051482536; / S(-1) = 0.9174286804.
    # Rows 13 and 14 add nothing, and are not false positives either.
    assert toy(12) == pytest.approx(0.9174286804, abs=1e-9)
    result = score_file(stamps(N), one_hot(N, 12, 13, 14), WIN, 0.5, STANDARD, probationary_percent=0.0)
    assert result.score == pytest.approx(0.9174286804, abs=1e-9)
    assert (result.tp, result.fp, result.fn, result.detections_in_windows) == (1, 0, 0, 3)
    # A later first detection is worth less: row 13, p = -0.4 -> 0.7719269398.
    assert toy(13) == pytest.approx(0.7719269398, abs=1e-9)


def test_threshold_is_inclusive():
    scores = np.full(N, 0.2)
    scores[10] = 0.7
    assert score_file(stamps(N), scores, WIN, 0.7, STANDARD, probationary_percent=0.0).score == pytest.approx(
        1.0
    )
    assert score_file(stamps(N), scores, WIN, 0.7001, STANDARD, probationary_percent=0.0).score == -1.0


def test_probationary_rows_are_ignored():
    # 100 rows -> the first floor(0.15 * 100) = 15 rows are probationary. Window on rows 50..59.
    n = 100
    wins = [window(50, 59)]
    perfect = score_file(stamps(n), one_hot(n, 50), wins, 0.5, STANDARD)
    assert perfect.score == pytest.approx(1.0)
    assert perfect.scored_rows == 85
    # A detection in row 14 (probation) changes nothing...
    assert score_file(stamps(n), one_hot(n, 14, 50), wins, 0.5, STANDARD) == perfect
    # ...but row 15 is scored: a false positive before any window, -0.11.
    late = score_file(stamps(n), one_hot(n, 15, 50), wins, 0.5, STANDARD)
    assert late.score == pytest.approx(1.0 - 0.11)
    assert late.fp == 1


def test_window_inside_probation_is_not_scored():
    # 100 rows, probation 15; a window on rows 2..5 is never scored (neither TP nor FN), as in NAB,
    # but it still is the "preceding window" of a false positive: row 20 -> p = (20 - 5) / 3 = 5 > 3 -> -0.11.
    result = score_file(stamps(100), one_hot(100, 20), [window(2, 5)], 0.5, STANDARD)
    assert (result.tp, result.fn, result.fp) == (0, 0, 1)
    assert result.score == pytest.approx(-0.11)


def test_two_windows_false_positive_uses_the_closest_preceding_window():
    # Windows rows 5..9 (W=5) and 20..22 (W=3). Row 23: p = (23 - 22) / (3 - 1) = 0.5 -> S(0.5) = -tanh(1.25)
    # = -0.8482836400; times 0.11 = -0.0933112004. Both windows missed: -2. Total -2.0933112004.
    wins = [window(5, 9), window(20, 22)]
    result = score_file(stamps(N), one_hot(N, 23), wins, 0.5, STANDARD, probationary_percent=0.0)
    assert result.score == pytest.approx(-2.0933112004, abs=1e-9)


def test_timestamps_need_not_be_monotonic_outside_windows():
    # Real NAB files repeat an hour at a DST change; rows, not times, are what NAB counts.
    times = stamps(N)
    times[25] = times[3]  # a step back in time after the window
    result = score_file(times, one_hot(N, 10), WIN, 0.5, STANDARD, probationary_percent=0.0)
    assert result.score == pytest.approx(1.0)


def test_window_bounds_between_rows_snap_inward():
    # Window from row 9.5 to row 14.5 in time covers rows 10..14, the same as WIN.
    times = stamps(N)
    half = timedelta(minutes=2, seconds=30)
    wins = [(times[9] + half, times[14] + half)]
    assert score_file(
        times, one_hot(N, 14), wins, 0.5, STANDARD, probationary_percent=0.0
    ).score == pytest.approx(toy(14))


def test_profiles_change_the_score_in_the_expected_direction():
    # Same decisions: a hit plus two false positives before the window.
    rows = (1, 2, 10)
    standard, low_fp, low_fn = (toy(*rows, profile=p) for p in (STANDARD, LOW_FP, LOW_FN))
    assert low_fp == pytest.approx(1.0 - 2 * 0.22)
    assert standard == pytest.approx(1.0 - 2 * 0.11)
    assert low_fp < standard  # false positives cost more
    assert low_fn == pytest.approx(standard)  # nothing was missed, so the FN weight does not matter
    # A miss costs twice as much under reward_low_FN_rate.
    assert toy(1, profile=LOW_FN) == pytest.approx(-2.11)
    assert toy(1, profile=STANDARD) == pytest.approx(-1.11)


def test_score_detections_accepts_booleans_and_equals_score_file():
    detections = np.zeros(N, dtype=bool)
    detections[[3, 12]] = True
    by_bool = score_detections(stamps(N), detections, WIN, STANDARD, probationary_percent=0.0)
    assert by_bool == score_file(
        stamps(N), detections.astype(float), WIN, 0.5, STANDARD, probationary_percent=0.0
    )
    assert by_bool.score == pytest.approx(0.9174286804 - 0.11, abs=1e-9)


# --- a literal reference implementation -------------------------------------------------------------


def reference_score(n_rows, detected_rows, windows_rows, profile, probation):
    """The rules, one row at a time, with no vectorisation: TP/FN per window, then each FP."""

    def s(p):
        return -1.0 if p > 3 else 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0

    score = 0.0
    for lo, hi in windows_rows:
        if hi < probation:
            continue
        width = hi - lo + 1
        hits = [i for i in range(max(lo, probation), hi + 1) if i in detected_rows]
        if hits:
            score += profile.tp_weight * s(-(hi - hits[0] + 1) / width) / s(-1.0)
        else:
            score -= profile.fn_weight
    for i in sorted(detected_rows):
        if i < probation or any(lo <= i <= hi for lo, hi in windows_rows):
            continue
        before = [(lo, hi) for lo, hi in windows_rows if hi < i]
        if not before:
            score -= profile.fp_weight
        else:
            lo, hi = before[-1]
            score += profile.fp_weight * s((i - hi) / max(hi - lo, 1))
    return score


def random_layout(rng, n_rows):
    """Sorted, non-overlapping windows of 1..8 rows."""
    rows: list[tuple[int, int]] = []
    cursor = int(rng.integers(0, 6))
    while True:
        width = int(rng.integers(1, 9))
        if cursor + width > n_rows:
            return rows
        rows.append((cursor, cursor + width - 1))
        cursor += width + int(rng.integers(1, 12))


def test_matches_the_reference_on_random_files():
    rng = np.random.default_rng(7)
    for case in range(200):
        n = int(rng.integers(5, 60))
        layout = random_layout(rng, n)
        times = stamps(n)
        wins = [(times[lo], times[hi]) for lo, hi in layout]
        detected = set(np.flatnonzero(rng.random(n) < 0.2).tolist())
        pct = [0.0, 0.15, 0.3][case % 3]
        for profile in PROFILES.values():
            got = score_file(times, one_hot(n, *detected), wins, 0.5, profile, probationary_percent=pct)
            want = reference_score(n, detected, layout, profile, probationary_rows(n, pct))
            assert got.score == pytest.approx(want, abs=1e-12), (case, layout, sorted(detected))


def test_corpus_sweep_finds_the_best_of_all_thresholds():
    # Brute force: score every distinct threshold with the reference and compare with the sweep.
    rng = np.random.default_rng(11)
    for _ in range(20):
        results, windows, layouts = {}, {}, {}
        for f in range(3):
            n = int(rng.integers(20, 50))
            layout = random_layout(rng, n)
            times = stamps(n)
            scores = np.round(rng.random(n), 1)  # coarse values: many ties
            results[f"f{f}"] = ResultSeries(times, scores)
            windows[f"f{f}"] = [(times[lo], times[hi]) for lo, hi in layout]
            layouts[f"f{f}"] = (n, layout, scores)
        if not any(layout for _, layout, _ in layouts.values()):
            continue
        report = score_corpus(results, windows, PROFILES, probationary_percent=0.1)
        candidates = sorted({float(v) for _, _, s in layouts.values() for v in s} | {math.inf}, reverse=True)
        for name, profile in PROFILES.items():
            by_threshold = [
                sum(
                    reference_score(
                        n, set(np.flatnonzero(s >= t).tolist()), layout, profile, probationary_rows(n, 0.1)
                    )
                    for n, layout, s in layouts.values()
                )
                for t in candidates
            ]
            best = max(by_threshold)
            got = report.profiles[name]
            assert got.threshold is not None
            assert got.raw_score == pytest.approx(best, abs=1e-9)
            # The chosen threshold really gives that score (ties may pick another equally good one).
            assert by_threshold[candidates.index(got.threshold)] == pytest.approx(best, abs=1e-9)


# --- corpus ----------------------------------------------------------------------------------------


def toy_corpus():
    """File a: window rows 10..14, row 10 scores 0.9. File b: window rows 20..24, rows 0..9 score 0.8
    (ten false positives before the window), row 22 scores 0.7 (p = -0.6). Everything else 0.1."""
    a = np.full(N, 0.1)
    a[10] = 0.9
    b = np.full(N, 0.1)
    b[0:10] = 0.8
    b[22] = 0.7
    results = {"a.csv": ResultSeries(stamps(N), a), "b.csv": ResultSeries(stamps(N), b)}
    windows = {"a.csv": [window(10, 14)], "b.csv": [window(20, 24)]}
    return results, windows


def test_threshold_optimisation_on_a_toy_corpus():
    # Candidate corpus scores (standard, fp 0.11):
    #   inf: -1 - 1 = -2;   0.9: a hit 1.0, b missed -1 -> 0.0;   0.8: 0.0 - 10 * 0.11 = -1.1;
    #   0.7: 1.0 - 1.1 + 0.9174286804 = 0.8174286804 (best);   0.1: every row fires, far worse.
    # reward_low_FP_rate (fp 0.22): 0.7 gives 1.0 - 2.2 + 0.917 = -0.283 < 0.0 -> best is 0.9, raw 0.0.
    # reward_low_FN_rate (fn 2): 0.9 gives 1 - 2 = -1; 0.7 gives 0.8174286804 -> 0.7.
    results, windows = toy_corpus()
    report = score_corpus(results, windows, PROFILES, probationary_percent=0.0)
    standard = report.profiles["standard"]
    assert standard.threshold == 0.7
    assert standard.raw_score == pytest.approx(0.8174286804, abs=1e-9)
    assert (standard.null_score, standard.perfect_score) == (-2.0, 2.0)
    # 100 * (0.8174286804 + 2) / (2 + 2) = 70.43571701
    assert standard.normalized_score == pytest.approx(70.43571701, abs=1e-7)
    assert standard.files["b.csv"].fp == 10
    assert standard.summary.windows_hit == 2

    low_fp = report.profiles["reward_low_FP_rate"]
    assert low_fp.threshold == 0.9
    assert low_fp.raw_score == pytest.approx(0.0, abs=1e-12)
    assert low_fp.normalized_score == pytest.approx(50.0)  # 100 * (0 + 2) / 4

    low_fn = report.profiles["reward_low_FN_rate"]
    assert low_fn.threshold == 0.7
    assert (low_fn.null_score, low_fn.perfect_score) == (-4.0, 2.0)
    # 100 * (0.8174286804 + 4) / (2 + 4) = 80.29047801
    assert low_fn.normalized_score == pytest.approx(80.29047801, abs=1e-7)


def test_ties_go_to_the_highest_threshold():
    # Row 10 (window start) at 0.9 and row 12 at 0.6: both thresholds score 1.0 (row 12 adds nothing).
    scores = np.zeros(N)
    scores[10], scores[12] = 0.9, 0.6
    report = score_corpus(
        {"a": ResultSeries(stamps(N), scores)}, {"a": WIN}, {"standard": STANDARD}, probationary_percent=0.0
    )
    assert report.profiles["standard"].threshold == 0.9
    assert report.profiles["standard"].raw_score == pytest.approx(1.0)


def test_null_and_perfect_detectors_normalise_to_0_and_100():
    results, windows = toy_corpus()
    nothing = {name: DetectionSeries(r.timestamps, np.zeros(N, dtype=bool)) for name, r in results.items()}
    perfect = {
        "a.csv": ResultSeries(stamps(N), one_hot(N, 10)),
        "b.csv": ResultSeries(stamps(N), one_hot(N, 20)),
    }
    null_report = fixed_threshold_report(nothing, windows, PROFILES, probationary_percent=0.0)
    perfect_report = score_corpus(perfect, windows, PROFILES, probationary_percent=0.0)
    for name in PROFILES:
        assert null_report.profiles[name].normalized_score == pytest.approx(0.0, abs=1e-12)
        assert perfect_report.profiles[name].threshold == 1.0
        assert perfect_report.profiles[name].normalized_score == pytest.approx(100.0, abs=1e-12)


def test_constant_scores_sweep_to_no_detection_when_false_positives_dominate():
    # Only two candidates: +inf (detect nothing, -2) or 0.0 (every row fires: the 25 rows outside each
    # window cost far more than the two hits earn under the standard profile).
    _, windows = toy_corpus()
    constant = {name: ResultSeries(stamps(N), np.zeros(N)) for name in windows}
    result = score_corpus(constant, windows, {"standard": STANDARD}, probationary_percent=0.0).profiles[
        "standard"
    ]
    assert result.threshold == math.inf
    assert result.raw_score == -2.0
    assert result.summary.detections == 0


def test_fixed_threshold_report_counts_and_rates():
    # a: hit at row 12 (0.9174286804) plus false alarms at rows 3 (-0.11) and 27 (p = 13/4 > 3: -0.11).
    # b: window rows 20..24 missed (-1), one false alarm at row 5 (-0.11).
    decisions = {
        "a.csv": DetectionSeries(stamps(N), one_hot(N, 3, 12, 13, 27).astype(bool)),
        "b.csv": DetectionSeries(stamps(N), one_hot(N, 5)),
    }
    windows = {"a.csv": [window(10, 14)], "b.csv": [window(20, 24)]}
    report = fixed_threshold_report(decisions, windows, PROFILES, probationary_percent=0.0)
    summary = report.summary
    assert (summary.windows_total, summary.windows_hit) == (2, 1)
    assert (summary.detections, summary.detections_in_windows, summary.false_alarms) == (5, 2, 3)
    assert summary.scored_rows == 60
    assert summary.precision == pytest.approx(2 / 5)
    assert summary.recall == pytest.approx(0.5)
    assert summary.false_alarms_per_1k == pytest.approx(3 / 60 * 1000)
    standard = report.profiles["standard"]
    assert standard.threshold is None
    # raw = 0.9174286804 - 0.11 - 0.11 - 1 - 0.11 = -0.4125713196
    # normalised = 100 * (raw + 2) / 4 = 39.68571701
    assert standard.raw_score == pytest.approx(-0.4125713196, abs=1e-9)
    assert standard.normalized_score == pytest.approx(39.68571701, abs=1e-7)
    assert report.profiles["reward_low_FP_rate"].raw_score == pytest.approx(0.9174286804 - 0.66 - 1, abs=1e-9)


def test_fixed_report_with_no_detections_has_undefined_precision():
    decisions = {"a": DetectionSeries(stamps(N), np.zeros(N, dtype=bool))}
    summary = fixed_threshold_report(decisions, {"a": WIN}, PROFILES, probationary_percent=0.0).summary
    assert summary.precision is None
    assert summary.recall == 0.0
    assert summary.false_alarms_per_1k == 0.0


# --- errors ----------------------------------------------------------------------------------------


def test_results_must_cover_the_labelled_files():
    results, windows = toy_corpus()
    del results["b.csv"]
    results["c.csv"] = ResultSeries(stamps(N), np.zeros(N))
    with pytest.raises(NabScoringError, match=r"missing=\['b.csv'\] extra=\['c.csv'\]"):
        score_corpus(results, windows, PROFILES)


def test_scores_must_be_finite_and_one_per_row():
    with pytest.raises(NabScoringError, match="anomaly scores must be finite"):
        score_file(stamps(N), np.full(N, np.nan), WIN, 0.5, STANDARD)
    with pytest.raises(NabScoringError, match=r"expected 30 scores \(one per timestamp\), got shape \(29,\)"):
        score_file(stamps(N), np.zeros(N - 1), WIN, 0.5, STANDARD)


def test_decisions_must_be_binary():
    with pytest.raises(NabScoringError, match="decisions must be 0/1 or booleans"):
        score_detections(stamps(N), np.full(N, 0.5), WIN, STANDARD)


def test_window_without_rows_is_rejected():
    late = (T0 + timedelta(days=10), T0 + timedelta(days=11))
    with pytest.raises(NabScoringError, match="contains no row of the series"):
        score_file(stamps(N), np.zeros(N), [late], 0.5, STANDARD)


def test_overlapping_or_unsorted_windows_are_rejected():
    with pytest.raises(NabScoringError, match="windows must be sorted and must not overlap"):
        score_file(stamps(N), np.zeros(N), [window(10, 14), window(12, 20)], 0.5, STANDARD)
    with pytest.raises(NabScoringError, match="window ends before it starts"):
        score_file(stamps(N), np.zeros(N), [(stamps(N)[5], stamps(N)[2])], 0.5, STANDARD)


def test_corpus_without_windows_has_no_normalised_score():
    with pytest.raises(NabScoringError, match="normalised score is undefined"):
        score_corpus({"a": ResultSeries(stamps(N), np.zeros(N))}, {"a": []}, PROFILES)


def test_negative_weights_are_rejected():
    with pytest.raises(NabScoringError, match=r"fp_weight must be a finite number >= 0, got -0\.11"):
        make_profile("bad", tp_weight=1.0, fn_weight=1.0, fp_weight=-0.11)


def test_load_profiles_rejects_a_missing_weight(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text('{"p": {"CostMatrix": {"tpWeight": 1, "fnWeight": 1, "tnWeight": 1}}}')
    with pytest.raises(NabScoringError, match="profile 'p': fpWeight must be a number, got None"):
        load_profiles(path)


def test_load_windows_rejects_bad_timestamps_and_missing_files(tmp_path):
    path = tmp_path / "windows.json"
    path.write_text('{"x.csv": [["2014-01-01 00:00:00.000000", "not a time"]]}')
    with pytest.raises(
        NabScoringError, match=r"window \['2014-01-01 00:00:00.000000', 'not a time'\] of 'x.csv'"
    ):
        load_windows(path)
    with pytest.raises(NabScoringError, match="cannot read"):
        load_windows(tmp_path / "absent.json")


# --- the real NAB label files (read-only, from ../shared) ----------------------------------------


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"NAB data missing: {path} (expected the NAB copy described in {NAB_ROOT / 'SOURCE.md'})")
    return path


def read_nab_timestamps(name: str) -> np.ndarray:
    with require(NAB_ROOT / "data" / name).open(newline="") as handle:
        rows = csv.reader(handle)
        assert next(rows) == ["timestamp", "value"]
        return np.array([row[0] for row in rows], dtype="datetime64[us]")


def test_real_nab_profiles_and_windows_load():
    profiles = load_profiles(require(NAB_ROOT / "config" / "profiles.json"))
    assert profiles == {
        "standard": CostProfile("standard", 1.0, 1.0, 0.11, 1.0),
        "reward_low_FP_rate": CostProfile("reward_low_FP_rate", 1.0, 1.0, 0.22, 1.0),
        "reward_low_FN_rate": CostProfile("reward_low_FN_rate", 1.0, 2.0, 0.11, 1.0),
    }
    windows = load_windows(require(NAB_ROOT / "labels" / "combined_windows.json"))
    assert len(windows) == 31
    assert sum(len(w) for w in windows.values()) == 45  # SOURCE.md: 45 windows over the 31 files
    assert windows["artificialNoAnomaly/art_flatline.csv"] == []
    assert windows["artificialWithAnomaly/art_daily_flatmiddle.csv"] == [
        (datetime(2014, 4, 10, 7, 15), datetime(2014, 4, 11, 16, 45))
    ]


def test_real_nab_corpus_perfect_null_and_random_detectors():
    windows = load_windows(require(NAB_ROOT / "labels" / "combined_windows.json"))
    profiles = load_profiles(require(NAB_ROOT / "config" / "profiles.json"))
    rng = np.random.default_rng(0)
    perfect, null, random = {}, {}, {}
    for name, wins in windows.items():
        times = read_nab_timestamps(name)
        scores = np.zeros(len(times))
        for start, _ in wins:
            # Label timestamps are rows of the CSV, and no window starts inside the probation, so NAB's
            # normalisation (perfect = number of label windows * tpWeight) equals ours.
            (rows,) = np.nonzero(times == np.datetime64(start, "us"))
            assert len(rows) == 1
            assert rows[0] >= probationary_rows(len(times))
            scores[rows[0]] = 1.0
        perfect[name] = ResultSeries(times, scores)
        null[name] = ResultSeries(times, np.zeros(len(times)))
        random[name] = ResultSeries(times, rng.random(len(times)))

    for name, result in score_corpus(perfect, windows, profiles).profiles.items():
        assert result.normalized_score == pytest.approx(100.0, abs=1e-9), name
        assert result.perfect_score == 45 * profiles[name].tp_weight
    for name, result in score_corpus(null, windows, profiles).profiles.items():
        assert result.normalized_score == pytest.approx(0.0, abs=1e-9), name
        assert result.null_score == -45 * profiles[name].fn_weight

    started = time.perf_counter()
    report = score_corpus(random, windows, profiles)  # ~156k distinct thresholds x 3 profiles
    assert time.perf_counter() - started < 10.0
    standard = report.profiles["standard"]
    assert standard.threshold is not None
    # The sweep's optimum is what scoring every file at that threshold gives.
    assert standard.raw_score == pytest.approx(
        math.fsum(
            score_file(r.timestamps, r.scores, windows[n], standard.threshold, profiles["standard"]).score
            for n, r in random.items()
        )
    )
    # A random detector sits between null and perfect (NAB's published random: 11.0 / 1.2 / 19.5 on 58 files).
    for result in report.profiles.values():
        assert 0.0 < result.normalized_score < 40.0
    assert report.profiles["reward_low_FP_rate"].normalized_score < standard.normalized_score
