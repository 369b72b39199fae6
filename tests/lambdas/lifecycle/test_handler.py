"""The scheduled Lambda's entry point: one LifecycleNeedsAttention EMF line per run, and a WARNING log
line naming why when a person must act. Against moto and the Greengrass v2 fake, as test_lifecycle."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from lambdas.lifecycle import handler as handler_module
from lambdas.lifecycle.adapters import NEEDS_ATTENTION_METRIC, EmfAttentionMetrics
from lambdas.lifecycle.config import ENV_METRICS_NAMESPACE
from lambdas.lifecycle.handler import handle
from lambdas.lifecycle.services import Services, build_services
from tests.lambdas.lifecycle.helpers import CANARY_THINGS, ENVIRONMENT, Plane, control_plane
from tests.lambdas.lifecycle.test_lifecycle import V1

NAMESPACE = "EdgeML/edgeml-test"


@pytest.fixture
def plane() -> Iterator[Plane]:
    with control_plane() as running:
        yield running


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The powertools handler's output, redirected (it keeps the stdout it saw at import)."""
    handler_ = handler_module.logger.registered_handler
    assert isinstance(handler_, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler_.setStream(stream)
    yield stream
    handler_.setStream(previous)


def services_writing_to(plane: Plane, lines: list[str]) -> Services:
    return replace(plane.services(), attention_metrics=EmfAttentionMetrics(NAMESPACE, write=lines.append))


def logged(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def metric_line(lines: list[str]) -> dict[str, Any]:
    [line] = lines
    document: dict[str, Any] = json.loads(line)
    [directive] = document["_aws"]["CloudWatchMetrics"]
    # No dimensions: the alarm watches the metric without any.
    assert directive == {
        "Namespace": NAMESPACE,
        "Dimensions": [[]],
        "Metrics": [{"Name": NEEDS_ATTENTION_METRIC, "Unit": "Count"}],
    }
    return document


def test_a_run_that_needs_attention_writes_1_and_logs_why(plane: Plane, log_stream: io.StringIO):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None
    plane.report(CANARY_THINGS, outcome.deployment_id, inference_state="BROKEN")  # AUTO_ROLLBACK unset
    lines: list[str] = []

    result = handle(services_writing_to(plane, lines))

    assert (result["action"], result["needs_attention"], result["attention"]) == (
        "waiting",
        True,
        "canary-failed",
    )
    document = metric_line(lines)
    assert NEEDS_ATTENTION_METRIC == "LifecycleNeedsAttention"
    assert document[NEEDS_ATTENTION_METRIC] == [1.0]
    assert (document["action"], document["attention"]) == ("waiting", "canary-failed")
    [warning] = [entry for entry in logged(log_stream) if entry["level"] == "WARNING"]
    assert warning["message"] == "lifecycle check needs attention"
    assert (warning["attention"], warning["action"]) == ("canary-failed", "waiting")
    assert "canary edgeml-canary is failed" in warning["reason"]
    assert any("AnomalyDetector 1.2.0 is BROKEN" in reason for reason in warning["reasons"])


def test_a_normal_run_writes_0_and_logs_at_info(plane: Plane, log_stream: io.StringIO):
    plane.train_and_publish("job-1", V1)  # the canary is still installing
    lines: list[str] = []

    result = handle(services_writing_to(plane, lines))

    assert (result["action"], result["needs_attention"]) == ("waiting", False)
    document = metric_line(lines)
    assert document[NEEDS_ATTENTION_METRIC] == [0.0]
    assert document["action"] == "waiting"
    assert "attention" not in document
    entries = logged(log_stream)
    assert [entry["level"] for entry in entries] == ["INFO"]
    assert entries[0]["message"] == "lifecycle check"


def test_the_namespace_comes_from_the_environment_and_the_line_goes_to_stdout(
    capsys: pytest.CaptureFixture[str],
):
    services = build_services({**ENVIRONMENT, ENV_METRICS_NAMESPACE: NAMESPACE})
    assert services.attention_metrics is not None

    services.attention_metrics.emit(action="refused", attention="group-overlap")

    document = json.loads(capsys.readouterr().out)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert document[NEEDS_ATTENTION_METRIC] == [1.0]


def test_no_metric_without_a_namespace(plane: Plane, capsys: pytest.CaptureFixture[str]):
    assert build_services(ENVIRONMENT).attention_metrics is None
    assert build_services({**ENVIRONMENT, ENV_METRICS_NAMESPACE: " "}).attention_metrics is None
    plane.train_and_publish("job-1", V1)

    assert handle(plane.services())["needs_attention"] is False

    assert "CloudWatchMetrics" not in capsys.readouterr().out
