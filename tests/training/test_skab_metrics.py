"""SKAB point-wise metrics: hand-computed confusion matrices, pooling across files, the real labels."""

import csv
from pathlib import Path

import numpy as np
import pytest

from training.skab_metrics import (
    SKAB_TRAIN_ROWS,
    BinaryMetrics,
    SkabMetricsError,
    binary_metrics,
    corpus_binary_metrics,
)

SKAB_ROOT = Path("/work/shared/data/skab")

# index:   0  1  2  3  4  5  6  7  8  9
TRUE_A = [0, 0, 1, 1, 1, 0, 0, 0, 1, 0]
PRED_A = [0, 1, 1, 0, 1, 0, 0, 1, 1, 0]
# TP = rows 2, 4, 8 -> 3;  FP = rows 1, 7 -> 2;  FN = row 3 -> 1;  TN = rows 0, 5, 6, 9 -> 4.

TRUE_B = [1, 1, 0, 0]
PRED_B = [0, 1, 1, 1]
# TP = row 1 -> 1;  FP = rows 2, 3 -> 2;  FN = row 0 -> 1;  TN = 0.


def test_confusion_matrix_and_rates_by_hand():
    metrics = binary_metrics(TRUE_A, PRED_A)
    assert (metrics.tp, metrics.fp, metrics.tn, metrics.fn) == (3, 2, 4, 1)
    assert metrics.f1 == pytest.approx(3 / (3 + (2 + 1) / 2))  # 0.6667
    assert metrics.far_pct == pytest.approx(100 * 2 / (2 + 4))  # 33.33 %
    assert metrics.mar_pct == pytest.approx(100 * 1 / (1 + 3))  # 25 %


def test_accepts_booleans_and_skab_float_labels():
    as_float = binary_metrics(np.array(TRUE_A, dtype=float), np.array(PRED_A, dtype=float))
    as_bool = binary_metrics(np.array(TRUE_A, dtype=bool), np.array(PRED_A, dtype=bool))
    assert as_float == as_bool == binary_metrics(TRUE_A, PRED_A)


def test_corpus_pools_the_confusion_matrices():
    # Pooled: TP 3+1 = 4, FP 2+2 = 4, TN 4+0 = 4, FN 1+1 = 2.
    # F1 = 4 / (4 + 3) = 0.5714; FAR = 4 / 8 = 50 %; MAR = 2 / 6 = 33.33 %.
    # (The mean of the per-file F1s, (0.6667 + 0.4) / 2 = 0.5333, is NOT what SKAB reports.)
    report = corpus_binary_metrics({"a.csv": (TRUE_A, PRED_A), "b.csv": (TRUE_B, PRED_B)})
    total = report.total
    assert (total.tp, total.fp, total.tn, total.fn) == (4, 4, 4, 2)
    assert total.f1 == pytest.approx(4 / 7)
    assert total.far_pct == pytest.approx(50.0)
    assert total.mar_pct == pytest.approx(100 * 2 / 6)
    assert report.per_file["b.csv"].f1 == pytest.approx(1 / (1 + 1.5))
    assert report.per_file["a.csv"] == binary_metrics(TRUE_A, PRED_A)


def test_null_and_perfect_detectors_match_the_leaderboard_rows():
    truth = [0, 0, 1, 1, 0]
    null = binary_metrics(truth, [0] * 5)
    assert (null.f1, null.far_pct, null.mar_pct) == (0.0, 0.0, 100.0)
    perfect = binary_metrics(truth, truth)
    assert (perfect.f1, perfect.far_pct, perfect.mar_pct) == (1.0, 0.0, 0.0)


def test_undefined_rates_are_none():
    # No anomalies and no alarms: F1 and MAR are 0/0; FAR is 0 of 3.
    metrics = binary_metrics([0, 0, 0], [0, 0, 0])
    assert (metrics.f1, metrics.far_pct, metrics.mar_pct) == (None, 0.0, None)
    # Every row anomalous: FAR is 0/0.
    assert binary_metrics([1, 1], [1, 0]).far_pct is None


def test_invalid_inputs_are_rejected():
    with pytest.raises(SkabMetricsError, match="y_true and y_pred differ in length: 3 vs 2"):
        binary_metrics([0, 1, 0], [0, 1])
    with pytest.raises(SkabMetricsError, match="y_pred must contain only 0 and 1"):
        binary_metrics([0, 1], [0.0, np.nan])
    with pytest.raises(SkabMetricsError, match="y_true must be one-dimensional, got shape"):
        binary_metrics([[0, 1]], [0, 1])
    with pytest.raises(SkabMetricsError, match="y_true must be numeric 0/1 or boolean, got dtype <U1"):
        binary_metrics(["0", "1"], [0, 1])
    with pytest.raises(SkabMetricsError, match="no files to evaluate"):
        corpus_binary_metrics({})
    with pytest.raises(SkabMetricsError, match="fn must be >= 0, got -1"):
        BinaryMetrics.from_counts(tp=0, fp=0, tn=0, fn=-1)


def test_real_skab_labels_null_and_perfect_detectors():
    # Test rows of the 20 labelled valve files (SKAB's split: the first 400 rows are training data).
    files = sorted((SKAB_ROOT / "data").glob("valve*/*.csv"))
    if len(files) != 20:
        pytest.fail(
            f"SKAB data missing or incomplete under {SKAB_ROOT / 'data'} (found {len(files)} valve files)"
        )
    labels = {}
    for path in files:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=";"))
        labels[f"{path.parent.name}/{path.name}"] = np.array([float(row["anomaly"]) for row in rows])[
            SKAB_TRAIN_ROWS:
        ]
    null = corpus_binary_metrics({name: (y, np.zeros_like(y)) for name, y in labels.items()}).total
    perfect = corpus_binary_metrics({name: (y, y) for name, y in labels.items()}).total
    assert (null.f1, null.far_pct, null.mar_pct) == (0.0, 0.0, 100.0)  # SKAB's "Null detector" row
    assert (perfect.f1, perfect.far_pct, perfect.mar_pct) == (1.0, 0.0, 0.0)
    anomalous = sum(int(y.sum()) for y in labels.values())
    assert perfect.tp == null.fn == anomalous > 0
