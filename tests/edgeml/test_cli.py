"""The CLI's contract: --help everywhere, exit codes a script can rely on, endpoints scoped to the run."""

from __future__ import annotations

import os

import pytest

from edgeml.cli import EXIT_AWS, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main, render_text
from tests.support.cli import REPO, module_help

SUBCOMMANDS = [
    [],
    ["train"],
    ["train", "local"],
    ["train", "sagemaker"],
    ["evaluate"],
    ["publish"],
    ["publish", "model"],
    ["publish", "component"],
    ["deploy"],
    ["promote"],
    ["rollback"],
    ["fleet"],
    ["device"],
    ["device", "run"],
    ["device", "policy"],
    ["replay"],
    ["demo"],
]


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c) or "edgeml")
def test_help_of_every_command_explains_it_and_its_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == EXIT_OK
    text = capsys.readouterr().out
    assert text.startswith(f"usage: edgeml {' '.join(command)}".rstrip())
    assert "exit codes:" in text
    assert "3  AWS error" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train"], "the following arguments are required: MODE"),
        (["train", "local", "--data-dir", "x"], "the following arguments are required: --model-dir"),
        (["train", "local", "--data-dir", "x", "--model-dir", "y", "-p", "oops"], "expected NAME=VALUE"),
        (["rollback"], "the following arguments are required: --group"),
        (["fleet", "--group", "canary", "--thing", "t"], "not allowed with argument"),
        (["deploy"], "one of the arguments MODEL_FILE --model-uri is required"),
        (["device", "policy", "--thing-name", "gw"], "the following arguments are required: --name-prefix"),
        (["--progress", "sometimes", "fleet"], "invalid choice: 'sometimes'"),
    ],
)
def test_bad_usage_exits_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_missing_configuration_exits_2(tmp_path, capsys):
    assert main(["publish", "model", str(tmp_path / "model.onnx")]) == EXIT_USAGE
    assert "give --bucket or set MODEL_BUCKET" in capsys.readouterr().err
    assert main(["fleet"]) == EXIT_USAGE
    assert "CANARY_THING_GROUP_ARN (or TARGET_THING_GROUP_ARN) is required" in capsys.readouterr().err
    assert main(["device", "run", "--thing-name", "t", "--root", str(tmp_path)]) == EXIT_USAGE
    assert "needs the Greengrass fake: give --greengrass-endpoint-url" in capsys.readouterr().err


def test_unreadable_inputs_exit_2_and_a_bad_model_exits_1(tmp_path, capsys):
    assert main(["publish", "model", str(tmp_path / "missing.onnx"), "--bucket", "b"]) == EXIT_USAGE
    assert "cannot read model file" in capsys.readouterr().err
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_bytes(b"not onnx")
    assert (
        main(
            [
                "replay",
                str(REPO / "tests/training/data/machine_temperature_head2500.csv"),
                "--model",
                str(not_a_model),
            ]
        )
        == EXIT_FAILED
    )
    assert "edgeml: refused:" in capsys.readouterr().err
    assert main(["publish", "model", str(not_a_model), "--bucket", "b"]) == EXIT_FAILED
    assert '"error": "ModelValidationError"' in capsys.readouterr().err


def test_aws_errors_exit_3_and_endpoints_are_scoped_to_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MODEL_BUCKET", "edgeml-models")
    # Nothing listens on port 9: every call fails at the connection, which is an AWS error (3).
    argv = ["--endpoint-url", "http://127.0.0.1:9", "--greengrass-endpoint-url", "http://127.0.0.1:9"]
    code = main([*argv, "publish", "component", "--version", "1.0.0", "--build-dir", str(tmp_path)])
    assert code == EXIT_AWS
    assert "edgeml: AWS error: Could not connect to the endpoint URL" in capsys.readouterr().err
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert "AWS_ENDPOINT_URL_GREENGRASSV2" not in os.environ


def test_render_text_nests_mappings_and_skips_empty_values():
    text = render_text({"a": 1, "b": {"c": "x", "d": None}, "e": []})
    assert text == "a: 1\nb:\n  c: x"


def test_console_script_and_module_entry_point_agree():
    """`python -m edgeml` works from the checkout; the `edgeml` script, when installed, is the same main."""
    done = module_help("edgeml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: edgeml")
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["edgeml"] == "edgeml.cli:main"


def test_device_run_passes_its_polling_settings_to_the_device_runner(tmp_path, monkeypatch):
    import device.cli

    seen: list[list[str]] = []

    def fake_device_main(argv):
        seen.append(list(argv))
        return device.cli.EXIT_OK

    monkeypatch.setattr(device.cli, "main", fake_device_main)
    code = main(
        [
            "--greengrass-endpoint-url",
            "http://127.0.0.1:9",
            "device",
            "run",
            "--thing-name",
            "gw-7",
            "--root",
            str(tmp_path),
            "--poll-s",
            "0.5",
            "--deployment-poll-s",
            "0",
        ]
    )
    assert code == EXIT_OK
    (argv,) = seen
    assert argv[argv.index("--thing-name") + 1] == "gw-7"
    assert argv[argv.index("--greengrass-endpoint") + 1] == "http://127.0.0.1:9"
    assert argv[argv.index("--poll-s") + 1] == "0.5"
    assert argv[argv.index("--deployment-poll-s") + 1] == "0.0"
