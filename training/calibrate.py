"""Choose the anomaly threshold from training-window scores alone (no labels are ever used)."""

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from training.errors import CalibrationError, ConfigError

_MAD_TO_STD: Final = 1.4826
SUMMARY_QUANTILES: Final = (0.5, 0.9, 0.99, 0.995, 0.999)


@dataclass(frozen=True)
class QuantileRule:
    """threshold = margin * the ``quantile`` of training scores: clearly beyond the worst normal windows."""

    quantile: float = 0.995
    margin: float = 1.5
    name: Literal["quantile"] = "quantile"

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ConfigError(f"threshold quantile must be in (0, 1], got {self.quantile}")
        if not self.margin > 0.0:
            raise ConfigError(f"threshold margin must be > 0, got {self.margin}")


@dataclass(frozen=True)
class MadRule:
    """threshold = median + k * 1.4826 * MAD of the training scores (robust to a few dirty training rows)."""

    k: float = 10.0
    name: Literal["mad"] = "mad"

    def __post_init__(self) -> None:
        if not self.k > 0.0:
            raise ConfigError(f"threshold MAD multiplier k must be > 0, got {self.k}")


CalibrationRule = QuantileRule | MadRule


@dataclass(frozen=True)
class Calibration:
    threshold: float
    rule: CalibrationRule
    n_scores: int
    fraction_over_threshold: float  # of the training windows themselves

    def as_dict(self) -> dict[str, object]:
        params: dict[str, object]
        if isinstance(self.rule, QuantileRule):
            params = {"quantile": self.rule.quantile, "margin": self.rule.margin}
        else:
            params = {"k": self.rule.k}
        return {
            "rule": self.rule.name,
            **params,
            "threshold": self.threshold,
            "n_scores": self.n_scores,
            "train_fraction_over_threshold": self.fraction_over_threshold,
        }


def calibrate_threshold(scores: np.ndarray, rule: CalibrationRule) -> Calibration:
    """Apply ``rule`` to the training scores; a window is anomalous when ``score > threshold``."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        # Data, not a bug: e.g. values of ~1e-40 (below float32's normal range) have no usable spread.
        raise CalibrationError(
            "the training windows' scores contain NaN or infinity: the values' scale is degenerate "
            "(outside float32's normal range, or constant in a way the normalisation cannot handle)"
        )
    if isinstance(rule, QuantileRule):
        threshold = rule.margin * float(np.quantile(values, rule.quantile))
    else:
        median = float(np.median(values))
        threshold = median + rule.k * _MAD_TO_STD * float(np.median(np.abs(values - median)))
    return Calibration(
        threshold=threshold,
        rule=rule,
        n_scores=int(values.size),
        fraction_over_threshold=float(np.mean(values > threshold)),
    )


def score_summary(scores: np.ndarray) -> dict[str, float]:
    """Quantiles, mean and max of the scores, keyed ``p50``, ``p99.5`` ..., for the training metrics."""
    values = np.asarray(scores, dtype=np.float64)
    summary = {f"p{q * 100:g}": float(np.quantile(values, q)) for q in SUMMARY_QUANTILES}
    summary["mean"] = float(values.mean())
    summary["max"] = float(values.max())
    return summary
