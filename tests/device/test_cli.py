"""``python -m device`` against an in-process Greengrass v2 fake."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from device.cli import EXIT_DEVICE, main, parse_args
from standins.greengrass_fake import serve

REPO = Path(__file__).resolve().parents[2]
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def test_parse_args_builds_the_local_policy(tmp_path: Path) -> None:
    cfg = parse_args(
        [
            "--thing-name",
            "gw-01",
            "--root",
            str(tmp_path),
            "--greengrass-endpoint",
            "http://127.0.0.1:1",
            "--interpolate-component-configuration",
            "--reuse-python",
            "/usr/bin/python3",
        ]
    )
    assert cfg.policy.interpolate_component_configuration is True
    assert cfg.policy.reuse_python == "/usr/bin/python3"
    assert cfg.s3_endpoint is None


def test_a_device_without_a_deployment_exits_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serve() as fake:
        code = main(
            [
                "--thing-name",
                "gw-lonely",
                "--root",
                str(tmp_path),
                "--greengrass-endpoint",
                f"http://{fake.host}:{fake.port}",
                "--s3-endpoint",
                "http://127.0.0.1:1",
            ]
        )
    assert code == EXIT_DEVICE
    assert "no deployment targets gw-lonely or its thing groups" in caplog.text


def _sleeper_recipe() -> bytes:
    # Run appends its own pid on every start: one line means it was never restarted.
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Sleeper",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"greeting": "hello"}},
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Lifecycle": {"Run": "exec sh -c 'echo $$ >> {work:path}/pids; exec sleep 60'"},
            }
        ],
    }
    return json.dumps(recipe).encode()


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if check():
            return
        assert proc.poll() is None, f"the device exited early: {proc.communicate()}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_device_follows_a_new_deployment_revision_without_restarting(tmp_path: Path) -> None:
    thing_arn = "arn:aws:iot:us-east-1:123456789012:thing/gw-follow"
    with serve() as fake:
        gg = boto3.client(
            "greengrassv2",
            endpoint_url=fake.endpoint_url,
            region_name="us-east-1",
            **FAKE_CREDENTIALS,
        )
        gg.create_component_version(inlineRecipe=_sleeper_recipe())

        def deploy(greeting: str) -> str:
            components = {
                "com.example.Sleeper": {
                    "componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": json.dumps({"greeting": greeting})},
                }
            }
            return str(gg.create_deployment(targetArn=thing_arn, components=components)["deploymentId"])

        deploy("first")
        config = tmp_path / "config" / "com.example.Sleeper.json"
        pids = tmp_path / "work" / "com.example.Sleeper" / "pids"
        argv = ["--thing-name", "gw-follow", "--root", str(tmp_path), "--greengrass-endpoint"]
        argv += [fake.endpoint_url, "--poll-s", "0.1", "--deployment-poll-s", "0.1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for("the first start", lambda: pids.exists() and pids.read_text().count("\n") == 1, proc)
            second = deploy("second")
            _wait_for(
                "the new configuration", lambda: json.loads(config.read_text())["greeting"] == "second", proc
            )
            _wait_for(
                "the SUCCEEDED report",
                lambda: (
                    {
                        d["deploymentId"]: d["coreDeviceExecutionStatus"]
                        for d in gg.list_effective_deployments(coreDeviceThingName="gw-follow")[
                            "effectiveDeployments"
                        ]
                    }
                    == {second: "SUCCEEDED"}
                ),
                proc,
            )
            assert pids.read_text().count("\n") == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert json.loads(out) == {"thing_name": "gw-follow", "components": {"com.example.Sleeper": "FINISHED"}}
