"""The validation gate: a model's training metrics must meet configured floors and must not regress
against the model in production.

Metrics are read from the model's own ``training_metrics`` (docs/contracts.md §1), addressed by dotted
paths (``calibration.train_fraction_over_threshold``). Training here is unsupervised, so what it can
support is evidence about the fit (``n_windows``) and the calibration (the fraction of the training
windows the model itself flags); a training run that adds labelled scores (e.g. ``evaluation.nab_score``)
is gated on them by configuration alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.lifecycle.errors import ConfigError
from lambdas.lifecycle.registry import ModelRecord


@dataclass(frozen=True)
class MetricBound:
    metric: str
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class RegressionRule:
    """The candidate may be worse than production on ``metric`` by at most ``tolerance`` (absolute)."""

    metric: str
    higher_is_better: bool
    tolerance: float = 0.0


@dataclass(frozen=True)
class GatePolicy:
    floors: tuple[MetricBound, ...]
    regression: RegressionRule | None

    @classmethod
    def parse(cls, text: str) -> GatePolicy:
        """``{"floors": {"<metric>": {"min": x, "max": y}}, "regression": {"metric", "higher_is_better",
        "tolerance"} | null}``."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"gate policy is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) - {"floors", "regression"}:
            raise ConfigError('gate policy must be an object with only "floors" and "regression"')
        floors_raw = raw.get("floors", {})
        if not isinstance(floors_raw, dict):
            raise ConfigError('gate policy "floors" must map metric paths to {"min": x, "max": y}')
        floors = []
        for metric, bound in floors_raw.items():
            if not isinstance(bound, dict) or not bound or set(bound) - {"min", "max"}:
                raise ConfigError(f'gate floor for {metric!r} must be {{"min": x}} and/or {{"max": y}}')
            floors.append(
                MetricBound(
                    metric=metric,
                    minimum=_number(bound.get("min"), f"floor {metric}.min"),
                    maximum=_number(bound.get("max"), f"floor {metric}.max"),
                )
            )
        regression = raw.get("regression")
        rule = None
        if regression is not None:
            if not isinstance(regression, dict) or not isinstance(regression.get("metric"), str):
                raise ConfigError('gate "regression" must be {"metric": path, "higher_is_better": bool, ...}')
            higher = regression.get("higher_is_better")
            if not isinstance(higher, bool):
                raise ConfigError('gate "regression.higher_is_better" must be true or false')
            tolerance = _number(regression.get("tolerance", 0.0), "regression.tolerance")
            if tolerance is None or tolerance < 0:
                raise ConfigError('gate "regression.tolerance" must be a number >= 0')
            rule = RegressionRule(metric=regression["metric"], higher_is_better=higher, tolerance=tolerance)
        return cls(floors=tuple(floors), regression=rule)


# Enough windows to trust the calibration; and a model that flags more of its own training data than
# production did (by more than a point) would page the fleet more often for no new reason.
DEFAULT_GATE_POLICY = GatePolicy(
    floors=(MetricBound(metric="n_windows", minimum=100),),
    regression=RegressionRule(
        metric="calibration.train_fraction_over_threshold", higher_is_better=False, tolerance=0.01
    ),
)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...]  # why it failed (empty when passed)
    notes: tuple[str, ...]  # what was checked, for the record

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "; ".join(self.notes)


def metric_value(metrics: Mapping[str, object], path: str) -> float | None:
    """The number at a dotted path, or None if absent or not a finite number."""
    value: object = metrics
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def evaluate_gate(
    policy: GatePolicy, candidate: Mapping[str, object], production: ModelRecord | None
) -> GateDecision:
    reasons: list[str] = []
    notes: list[str] = []
    for bound in policy.floors:
        value = metric_value(candidate, bound.metric)
        if value is None:
            reasons.append(f"training metric {bound.metric!r} is missing or not a number")
            continue
        if bound.minimum is not None and value < bound.minimum:
            reasons.append(f"{bound.metric} = {value:g} is below the floor {bound.minimum:g}")
        elif bound.maximum is not None and value > bound.maximum:
            reasons.append(f"{bound.metric} = {value:g} is above the ceiling {bound.maximum:g}")
        else:
            notes.append(f"{bound.metric} = {value:g} within bounds")
    rule = policy.regression
    if rule is not None:
        if production is None:
            notes.append("no model in production: nothing to regress against")
        else:
            _check_regression(rule, candidate, production, reasons, notes)
    return GateDecision(passed=not reasons, reasons=tuple(reasons), notes=tuple(notes))


def _check_regression(
    rule: RegressionRule,
    candidate: Mapping[str, object],
    production: ModelRecord,
    reasons: list[str],
    notes: list[str],
) -> None:
    new = metric_value(candidate, rule.metric)
    old = metric_value(production.training_metrics, rule.metric)
    if new is None:
        reasons.append(f"training metric {rule.metric!r} is missing or not a number")
        return
    if old is None:
        notes.append(f"production model {production.model_version} has no {rule.metric}: not compared")
        return
    worse_by = (old - new) if rule.higher_is_better else (new - old)
    comparison = (
        f"{rule.metric} = {new:g} vs {old:g} for production model {production.model_version} "
        f"({'higher' if rule.higher_is_better else 'lower'} is better, tolerance {rule.tolerance:g})"
    )
    if worse_by > rule.tolerance:
        reasons.append(f"regression: {comparison}")
    else:
        notes.append(f"no regression: {comparison}")


def _number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"gate {where} must be a finite number, got {value!r}")
    return float(value)
