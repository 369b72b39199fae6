"""SKAB outlier-detection metrics (F1, FAR %, MAR %), written from SKAB's published evaluation.

SKAB (Katser & Kozitsin 2020) scores outlier detection point by point against the ``anomaly`` column.
Its leaderboard numbers come from one confusion matrix summed over the test rows of all files (not an
average of per-file scores), then:

* F1  = TP / (TP + (FP + FN) / 2)
* FAR = FP / (FP + TN) * 100   (false alarm rate, %)
* MAR = FN / (FN + TP) * 100   (missed alarm rate, %)

SKAB rounds to two decimals when printing; we keep full precision and leave rounding to the reader.
A ratio whose denominator is zero is ``None`` rather than NaN, so "undefined" cannot be mistaken for
a number. In SKAB's own split the first ``SKAB_TRAIN_ROWS`` rows of each labelled file are training
data; pass only the test rows here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from training.errors import TrainingError

SKAB_TRAIN_ROWS: Final = 400


class SkabMetricsError(TrainingError, ValueError):
    """Labels or predictions cannot be compared as given."""


@dataclass(frozen=True)
class BinaryMetrics:
    """Point-wise confusion matrix and SKAB's three rates derived from it."""

    f1: float | None
    far_pct: float | None
    mar_pct: float | None
    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def from_counts(cls, *, tp: int, fp: int, tn: int, fn: int) -> BinaryMetrics:
        for name, value in (("tp", tp), ("fp", fp), ("tn", tn), ("fn", fn)):
            if value < 0:
                raise SkabMetricsError(f"{name} must be >= 0, got {value}")
        f1_denominator = tp + (fp + fn) / 2
        return cls(
            f1=tp / f1_denominator if f1_denominator else None,
            far_pct=100.0 * fp / (fp + tn) if fp + tn else None,
            mar_pct=100.0 * fn / (fn + tp) if fn + tp else None,
            tp=tp,
            fp=fp,
            tn=tn,
            fn=fn,
        )

    def __add__(self, other: BinaryMetrics) -> BinaryMetrics:
        """Pool two confusion matrices (SKAB's corpus aggregation)."""
        return BinaryMetrics.from_counts(
            tp=self.tp + other.tp, fp=self.fp + other.fp, tn=self.tn + other.tn, fn=self.fn + other.fn
        )


@dataclass(frozen=True)
class CorpusBinaryMetrics:
    """SKAB's corpus numbers (pooled confusion matrix) and the per-file breakdown behind them."""

    total: BinaryMetrics
    per_file: Mapping[str, BinaryMetrics]


def binary_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> BinaryMetrics:
    """Point-wise metrics of one series. Both inputs are 0/1 (or bool) per row, same length."""
    truth = _as_binary(y_true, "y_true")
    pred = _as_binary(y_pred, "y_pred")
    if truth.shape != pred.shape:
        raise SkabMetricsError(f"y_true and y_pred differ in length: {truth.shape[0]} vs {pred.shape[0]}")
    return BinaryMetrics.from_counts(
        tp=int(np.count_nonzero(truth & pred)),
        fp=int(np.count_nonzero(~truth & pred)),
        tn=int(np.count_nonzero(~truth & ~pred)),
        fn=int(np.count_nonzero(truth & ~pred)),
    )


def corpus_binary_metrics(files: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]) -> CorpusBinaryMetrics:
    """SKAB's leaderboard aggregation: sum the confusion matrices of all files, then derive the rates.

    ``files`` maps a file name to ``(y_true, y_pred)`` for its test rows.
    """
    if not files:
        raise SkabMetricsError("no files to evaluate")
    per_file = {name: binary_metrics(truth, pred) for name, (truth, pred) in sorted(files.items())}
    total = BinaryMetrics.from_counts(tp=0, fp=0, tn=0, fn=0)
    for metrics in per_file.values():
        total = total + metrics
    return CorpusBinaryMetrics(total=total, per_file=per_file)


def _as_binary(values: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise SkabMetricsError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.bool_, copy=False)
    if not np.issubdtype(array.dtype, np.number):
        raise SkabMetricsError(f"{name} must be numeric 0/1 or boolean, got dtype {array.dtype}")
    # SKAB stores labels as 0.0 / 1.0; anything else (NaN, 2, 0.5) is a caller bug, not a negative.
    if not bool(np.all((array == 0) | (array == 1))):
        raise SkabMetricsError(f"{name} must contain only 0 and 1")
    return np.asarray(array == 1, dtype=np.bool_)
