"""The platform team's commands: exit codes, JSON output, and real effects on the local control plane."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping

import pytest

from lambdas.lifecycle.cli import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from lambdas.lifecycle.registry import LockRecord, utc_text
from lambdas.lifecycle.services import Services
from tests.lambdas.lifecycle.helpers import CANARY_THINGS, FLEET, MODEL_COMPONENT, Plane, control_plane
from tests.support.cli import module_help

V1 = "20261124T200000Z-00000001"


@pytest.fixture
def plane() -> Iterator[Plane]:
    with control_plane() as running:
        yield running


def run(plane: Plane, *argv: str) -> tuple[int, str]:
    out = io.StringIO()

    def services(_environ: Mapping[str, str]) -> Services:
        return plane.services()

    code = main(list(argv), environ={}, services=services, out=out)
    return code, out.getvalue()


def test_promote_refused_then_promoted_with_json_output(plane: Plane):
    outcome = plane.train_and_publish("job-1", V1)
    assert outcome.deployment_id is not None

    code, text = run(plane, "--json", "promote")
    assert code == EXIT_REFUSED
    refused = json.loads(text)
    assert "canary edgeml-canary is pending" in refused["refused"]
    assert len(refused["reasons"]) == 6  # two devices, three reasons each

    plane.report(CANARY_THINGS, outcome.deployment_id)
    code, text = run(plane, "promote", "--json", "--model-version", V1)
    assert code == EXIT_OK
    promoted = json.loads(text)
    assert promoted["outcome"] == "promoted"
    assert promoted["deployment_id"] == plane.latest_deployment(FLEET)["deploymentId"]
    assert promoted["health"]["state"] == "healthy"


def test_status_what_runs_where_and_rollback_refusal(plane: Plane):
    plane.train_and_publish("job-1", V1)

    code, text = run(plane, "status", "--json")
    assert code == EXIT_OK
    status = json.loads(text)
    assert status["canary"]["model"]["model_version"] == V1
    assert status["fleet"]["deployment"] is None

    code, text = run(plane, "status", "--model-version", V1)
    assert code == EXIT_OK
    assert "training_job: job-1" in text
    assert "stage: canary" in text

    code, text = run(plane, "what-runs-where", "--group", "canary", "--json")
    assert code == EXIT_OK
    view = json.loads(text)
    assert [d["thing_name"] for d in view["devices"]] == list(CANARY_THINGS)
    assert view["model"]["training_job"] == "job-1"

    code, text = run(plane, "rollback", "--group", "canary")
    assert code == EXIT_REFUSED
    assert text.startswith("refused: no earlier model to roll back to")

    code, text = run(plane, "status", "--model-version", "nope")
    assert (code, text.strip()) == (EXIT_REFUSED, "refused: the registry has no model 'nope'")


def test_rollback_command_restores_the_previous_version(plane: Plane):
    first = plane.train_and_publish("job-1", V1)
    second = plane.train_and_publish("job-2", "20261125T200000Z-00000002")
    assert first.deployment_id
    assert second.deployment_id
    code, text = run(plane, "rollback", "--group", "canary", "--reason", "bad scores", "--json")
    assert code == EXIT_OK
    assert json.loads(text)["to_component_version"] == "1.0.0"
    assert plane.latest_deployment(plane.lifecycle.canary.arn)["components"][MODEL_COMPONENT][
        "componentVersion"
    ] == ("1.0.0")


def test_a_repeated_rollback_changes_nothing_and_a_held_lock_exits_3(
    plane: Plane, capsys: pytest.CaptureFixture[str]
):
    versions = (V1, "20261125T200000Z-00000002", "20261126T200000Z-00000003")
    for number, version in enumerate(versions, start=1):
        plane.train_and_publish(f"job-{number}", version)
    command = ("--json", "rollback", "--group", "canary", "--reason", "V3 bad")

    code, text = run(plane, *command)
    assert code == EXIT_OK
    first = json.loads(text)
    code, text = run(plane, *command)  # retried after a lost response
    assert code == EXIT_OK
    again = json.loads(text)
    assert (again["to_model_version"], again["deployment_id"]) == (versions[1], first["deployment_id"])
    assert (first["outcome"], again["outcome"]) == ("rolled-back", "already-rolled-back")

    code, text = run(plane, *command, "--from-model-version", versions[1])
    assert code == EXIT_OK
    assert (json.loads(text)["from_model_version"], json.loads(text)["to_model_version"]) == versions[1::-1]

    now = int(plane.clock.now.timestamp())
    holder = LockRecord("cli-promote/elsewhere", utc_text(plane.clock.now), now + 900)
    assert plane.registry.acquire_lock(holder, now=now) is None
    capsys.readouterr()
    code, _text = run(plane, "rollback", "--group", "canary", "--from-model-version", V1)
    assert code == EXIT_FAILED
    assert "busy, retryable: cli-promote/elsewhere has held the lifecycle lock" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as caught:
        main(["promote", "--bogus"], environ={})
    assert caught.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as caught:
        main(["what-runs-where"], environ={})
    assert caught.value.code == EXIT_USAGE
    assert "one of the arguments --group --thing is required" in capsys.readouterr().err


def test_missing_configuration_exits_2(capsys: pytest.CaptureFixture[str]):
    assert main(["status"], environ={}) == EXIT_USAGE
    assert "CANARY_THING_GROUP_ARN (or TARGET_THING_GROUP_ARN) is required" in capsys.readouterr().err


def test_module_entry_point_help():
    done = module_help("lambdas.lifecycle")
    assert done.returncode == 0
    for command in ("status", "promote", "rollback", "what-runs-where"):
        assert command in done.stdout
