"""The gate as a pure function over plain metric dictionaries."""

from __future__ import annotations

import pytest

from lambdas.lifecycle.errors import ConfigError
from lambdas.lifecycle.gate import (
    DEFAULT_GATE_POLICY,
    GatePolicy,
    MetricBound,
    RegressionRule,
    evaluate_gate,
    metric_value,
)
from lambdas.lifecycle.registry import ModelRecord, ModelStatus


def production(**metrics: object) -> ModelRecord:
    return ModelRecord(
        model_version="prod-1",
        model_name="pump",
        model_uri="s3://b/models/pump/prod-1/model.onnx",
        sha256="ab" * 32,
        status=ModelStatus.FLEET,
        created_at="2026-11-24T20:00:00.000000Z",
        updated_at="2026-11-24T20:00:00.000000Z",
        training_metrics=metrics,
    )


def candidate(n_windows: object = 500, fraction: object = 0.002) -> dict[str, object]:
    return {"n_windows": n_windows, "calibration": {"train_fraction_over_threshold": fraction}}


def test_passes_floor_and_no_regression():
    decision = evaluate_gate(
        DEFAULT_GATE_POLICY, candidate(), production(calibration={"train_fraction_over_threshold": 0.004})
    )
    assert decision.passed
    assert decision.reasons == ()
    assert "n_windows = 500 within bounds" in decision.notes


def test_floor_failure_names_the_metric_and_bound():
    decision = evaluate_gate(DEFAULT_GATE_POLICY, candidate(n_windows=99), None)
    assert not decision.passed
    assert decision.reasons == ("n_windows = 99 is below the floor 100",)


@pytest.mark.parametrize("value", [None, "many", True, float("nan")])
def test_missing_or_non_numeric_metric_fails(value: object):
    metrics = candidate()
    if value is None:
        del metrics["n_windows"]
    else:
        metrics["n_windows"] = value
    decision = evaluate_gate(DEFAULT_GATE_POLICY, metrics, None)
    assert decision.reasons == ("training metric 'n_windows' is missing or not a number",)


def test_ceiling_failure():
    policy = GatePolicy(
        floors=(MetricBound("calibration.train_fraction_over_threshold", maximum=0.01),), regression=None
    )
    decision = evaluate_gate(policy, candidate(fraction=0.02), None)
    assert decision.reasons == ("calibration.train_fraction_over_threshold = 0.02 is above the ceiling 0.01",)


def test_regression_beyond_tolerance_fails_and_within_passes():
    prod = production(calibration={"train_fraction_over_threshold": 0.002})
    worse = evaluate_gate(DEFAULT_GATE_POLICY, candidate(fraction=0.0121), prod)
    slightly = evaluate_gate(DEFAULT_GATE_POLICY, candidate(fraction=0.0119), prod)
    assert not worse.passed
    assert worse.reasons[0].startswith(
        "regression: calibration.train_fraction_over_threshold = 0.0121 vs 0.002"
    )
    assert slightly.passed


def test_higher_is_better_regression():
    policy = GatePolicy(
        floors=(), regression=RegressionRule("evaluation.nab_score", higher_is_better=True, tolerance=1)
    )
    prod = production(evaluation={"nab_score": 60})
    assert not evaluate_gate(policy, {"evaluation": {"nab_score": 58.5}}, prod).passed
    assert evaluate_gate(policy, {"evaluation": {"nab_score": 59.5}}, prod).passed


def test_no_production_or_production_without_the_metric_is_not_a_regression():
    assert "no model in production" in evaluate_gate(DEFAULT_GATE_POLICY, candidate(), None).notes[-1]
    decision = evaluate_gate(DEFAULT_GATE_POLICY, candidate(), production())
    assert decision.passed
    assert "production model prod-1 has no calibration.train_fraction_over_threshold" in decision.notes[-1]


def test_metric_paths():
    assert metric_value({"a": {"b": 3}}, "a.b") == 3.0
    assert metric_value({"a": {"b": 3}}, "a.c") is None
    assert metric_value({"a": 3}, "a.b") is None


def test_policy_parsing():
    policy = GatePolicy.parse(
        '{"floors": {"n_windows": {"min": 1000}}, '
        '"regression": {"metric": "score_quantiles.p99", "higher_is_better": false, "tolerance": 0.5}}'
    )
    assert policy == GatePolicy(
        floors=(MetricBound("n_windows", minimum=1000.0),),
        regression=RegressionRule("score_quantiles.p99", higher_is_better=False, tolerance=0.5),
    )
    assert GatePolicy.parse('{"floors": {}, "regression": null}') == GatePolicy(floors=(), regression=None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "gate policy is not JSON"),
        ('{"floor": {}}', 'only "floors" and "regression"'),
        ('{"floors": {"n": {"least": 1}}}', "gate floor for 'n' must be"),
        ('{"floors": {"n": {"min": "1"}}}', "gate floor n.min must be a finite number"),
        (
            '{"regression": {"metric": "m", "higher_is_better": "no"}}',
            'higher_is_better" must be true or false',
        ),
        ('{"regression": {"metric": "m", "higher_is_better": true, "tolerance": -1}}', "tolerance"),
    ],
)
def test_policy_parse_errors(text: str, message: str):
    with pytest.raises(ConfigError, match=message):
        GatePolicy.parse(text)
