"""``python -m device`` against an in-process Greengrass v2 fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.cli import EXIT_DEVICE, main, parse_args
from standins.greengrass_fake import serve


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
