"""The fake as a separate process: the CLI entry point and the admin API a device runner uses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from standins.greengrass_fake import AdminError, FakeAdminClient, InstalledComponentReport
from tests.standins.greengrass_helpers import group_arn, make_client, recipe

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_admin_client_drives_the_device_side_over_http(running, gg):
    admin = FakeAdminClient(running.endpoint_url)
    gg.create_component_version(inlineRecipe=recipe())
    admin.register_core_device("gw-1", architecture="aarch64")
    admin.set_thing_group_members("fleet", ["gw-1"])
    deployment_id = gg.create_deployment(
        targetArn=group_arn("fleet"), components={"com.example.Hello": {"componentVersion": "1.0.0"}}
    )["deploymentId"]

    desired = admin.desired_deployments("gw-1")
    admin.report_device_status(
        "gw-1",
        deployment_id,
        "SUCCEEDED",
        [InstalledComponentReport("com.example.Hello", "1.0.0", "RUNNING")],
    )

    assert [d["deployment_id"] for d in desired] == [deployment_id]
    assert desired[0]["components"] == {"com.example.Hello": {"version": "1.0.0", "reset": []}}
    assert admin.recipe("com.example.Hello", "1.0.0")["ComponentName"] == "com.example.Hello"
    effective = gg.list_effective_deployments(coreDeviceThingName="gw-1")["effectiveDeployments"]
    assert effective[0]["coreDeviceExecutionStatus"] == "SUCCEEDED"
    assert gg.get_core_device(coreDeviceThingName="gw-1")["architecture"] == "aarch64"
    with pytest.raises(AdminError) as excinfo:
        admin.report_device_status("gw-1", "no-such-deployment", "SUCCEEDED")
    assert (excinfo.value.status, excinfo.value.code) == (404, "ResourceNotFoundException")


def test_cli_serves_until_sigterm():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.greengrass_fake", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        gg = make_client(ready["endpoint_url"])
        gg.create_component_version(inlineRecipe=recipe())
        listed = gg.list_components()["components"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert ready["endpoint_url"].startswith("http://127.0.0.1:")
    assert [c["componentName"] for c in listed] == ["com.example.Hello"]
    assert process.returncode == 0
    logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    requests = [entry for entry in logs if entry["message"] == "request"]
    assert [r["operation"] for r in requests] == ["CreateComponentVersion", "ListComponents"]
    assert [r["status"] for r in requests] == [201, 200]
    assert logs[-1]["message"] == "stopped"
