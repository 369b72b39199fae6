"""training.launch against moto's SageMaker (cloud) and in-process (local).

The cloud tests run a moto server on a free port and point boto3 at it with AWS_ENDPOINT_URL, as the
demo does; a socket guard records any connection that would leave the machine.
"""

import io
import json
import os
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.parsers import ResponseParserError

from tests.support.moto import moto_server
from tests.training.launch_support import (
    Aws,
    channel_uri,
    download_prefix,
    guard_offsite,
    moto_aws,
    nab_channel,
    store_config,
    use_fake_aws,
)
from tests.training.train_helpers import timestamps, write_csv
from training.launch import (
    entry_point_args,
    launch_cloud,
    main,
    resolve_training_image,
    run_local,
)
from training.launch_config import (
    DEFAULT_REQUIREMENTS,
    REQUIREMENTS_FILE,
    JobStateUnknownError,
    LaunchConfig,
    LaunchConfigError,
    LaunchError,
    LocalTrainingError,
    charset_from_pattern,
    job_hyperparameters,
    job_role_permissions,
    service_limits,
)

REGION = "us-east-1"
BUCKET = "edgeml-model-store"
ROLE_ARN = "arn:aws:iam::123456789012:role/edgeml-dev-training"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SKLEARN_IMAGE_US_EAST_1 = (
    "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-py312-cpu-py3"
)
REPO_REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"
FROZEN = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_fake_aws(monkeypatch, tmp_path)


@pytest.fixture
def offsite_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    return guard_offsite(monkeypatch)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, offsite_connections: list[object]) -> Iterator[Aws]:
    with moto_aws(moto_url, monkeypatch, bucket=BUCKET) as running:
        yield running
    assert offsite_connections == [], "a call left the machine instead of going to moto"


def describe(aws: Aws, name: str) -> dict[str, Any]:
    return aws.describe(name)


def cloud_argv(aws: Aws, *extra: str) -> list[str]:
    return [
        "cloud",
        "--bucket",
        BUCKET,
        "--dataset",
        "nab",
        "--role-arn",
        aws.role_arn,
        "--skip-role-validation",
        *extra,
    ]


# --------------------------------------------------------------------------------------------------
# Cloud: the recorded training job


def test_launch_cloud_creates_the_training_job_moto_records(aws: Aws) -> None:
    cfg = store_config(
        aws,
        instance_type="ml.c5.xlarge",
        instance_count=2,
        max_runtime_seconds=1800,
        job_name_prefix="edgeml-nab",
        hyperparameters={"window_length": 32, "threshold_quantile": 0.99, "model_name": "pump-1"},
        tags={"project": "edgeml", "stage": "test"},
    )

    name = launch_cloud(cfg, boto_session=aws.session, validate_role=False)

    assert re.fullmatch(r"edgeml-nab-\d{14}-[a-z0-9]{6}", name)
    job = describe(aws, name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == SKLEARN_IMAGE_US_EAST_1
    assert job["RoleArn"] == aws.role_arn == "arn:aws:iam::123456789012:role/edgeml-training"
    assert channel_uri(job, "train") == f"s3://{BUCKET}/datasets/nab/"
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/training-output/"
    resources = job["ResourceConfig"]
    assert (resources["InstanceType"], resources["InstanceCount"]) == ("ml.c5.xlarge", 2)
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800}
    ours = {"window_length": "32", "threshold_quantile": "0.99", "model_name": "pump-1"}
    recorded = job["HyperParameters"]
    assert {k: v for k, v in recorded.items() if k in ours} == ours
    assert all(k.startswith("sagemaker_") for k in recorded if k not in ours)
    tags = aws.session.client("sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"project": "edgeml", "stage": "test"}
    # Exactly one CreateTrainingJob, and it carries the import path moto does not store.
    (request,) = aws.create_requests
    assert request["Environment"] == {"PYTHONPATH": "/opt/ml/input/data/code"}
    # The role check was switched off for this call only.
    assert "SAGEMAKER_VALIDATE_ROLE" not in os.environ


def test_source_code_is_uploaded_to_the_model_store_code_prefix(aws: Aws, tmp_path: Path) -> None:
    name = launch_cloud(store_config(aws), boto_session=aws.session, validate_role=False)

    job = describe(aws, name)
    code_uri = channel_uri(job, "code")
    drivers_uri = channel_uri(job, "sm_drivers")
    assert code_uri == f"s3://{BUCKET}/code/edgeml-train/{name}/input/code"
    assert drivers_uri == f"s3://{BUCKET}/code/edgeml-train/{name}/input/sm_drivers"
    code = download_prefix(aws, code_uri, tmp_path / "code")
    assert (code / REQUIREMENTS_FILE).read_text().splitlines() == list(DEFAULT_REQUIREMENTS)
    assert (code / "training" / "train.py").read_bytes() == Path("training/train.py").read_bytes()
    assert not list(code.rglob("__pycache__"))
    drivers = download_prefix(aws, drivers_uri, tmp_path / "sm_drivers")
    source_code = json.loads((drivers / "sourcecode.json").read_text())
    assert source_code["entry_script"] == "training/train.py"
    assert source_code["requirements"] == REQUIREMENTS_FILE
    # Only the model store bucket exists: nothing went to a sagemaker-<region>-<account> default bucket.
    assert [b["Name"] for b in aws.session.client("s3").list_buckets()["Buckets"]] == [BUCKET]


def test_uploaded_job_trains_when_run_like_the_container(aws: Aws, tmp_path: Path) -> None:
    """Run the SDK's own container driver on the uploaded channels, with the job's recorded settings."""
    from sagemaker.train.container_drivers.common.utils import safe_deserialize

    cfg = store_config(aws, hyperparameters={"window_length": 16, "model_version": "v7", "train_rows": 1500})
    name = launch_cloud(cfg, boto_session=aws.session, validate_role=False)
    job = describe(aws, name)
    (request,) = aws.create_requests
    opt_ml = tmp_path / "opt" / "ml"
    code = download_prefix(aws, channel_uri(job, "code"), opt_ml / "input" / "data" / "code")
    drivers = download_prefix(aws, channel_uri(job, "sm_drivers"), opt_ml / "input" / "data" / "sm_drivers")
    source_code = json.loads((drivers / "sourcecode.json").read_text())
    model_dir = opt_ml / "model"
    job_environment: dict[str, str] = request["Environment"]
    env = {
        **os.environ,
        # The job's environment, with the container's /opt/ml relocated under tmp_path.
        **{k: v.replace("/opt/ml", str(opt_ml)) for k, v in job_environment.items()},
        "SM_ENTRY_SCRIPT": source_code["entry_script"],
        # As the SDK's scripts/environment.py builds it from the job's stored (string) hyperparameters.
        "SM_HPS": json.dumps({k: safe_deserialize(v) for k, v in job["HyperParameters"].items()}),
        "SM_CHANNEL_TRAIN": str(nab_channel(tmp_path)),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
    }
    driver = drivers / "distributed_drivers" / "basic_script_driver.py"

    result = subprocess.run(
        [sys.executable, str(driver)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    # The driver ran the uploaded script (relative to the code channel) with the recorded hyperparameters.
    assert (
        "training/train.py --window_length 16 --model_version v7 --train_rows 1500 "
        "--model_name anomaly-detector" in result.stdout
    )
    model = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    metadata = model.get_modelmeta().custom_metadata_map
    assert (metadata["window_length"], metadata["model_version"]) == ("16", "v7")


def test_hyperparameters_reach_the_entry_point_as_the_sdk_driver_passes_them() -> None:
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    hyperparameters: dict[str, str | int | float] = {
        "window_length": 32,
        "ridge_alpha": 1e-3,
        "threshold_quantile": "0.995",
        "threshold_margin": "1e-1",
        "model_name": "pump-1",
        "channels": '["value","temp"]',
    }

    stored = job_hyperparameters(hyperparameters)

    assert stored == {
        "window_length": "32",
        "ridge_alpha": "0.001",
        "threshold_quantile": "0.995",
        "threshold_margin": "1e-1",
        "model_name": "pump-1",
        "channels": '["value","temp"]',
    }
    assert entry_point_args(hyperparameters) == hyperparameters_to_cli_args(stored)
    assert entry_point_args(hyperparameters)[-4:] == [
        "--model_name",
        "pump-1",
        "--channels",
        '["value", "temp"]',
    ]


def test_role_validation_runs_unless_switched_off(aws: Aws) -> None:
    # moto has no iam:SimulatePrincipalPolicy: reaching it proves the launcher's role check ran, before
    # any upload (tests/training/test_launch_role.py answers it as IAM would).
    with pytest.raises(ResponseParserError, match="500 Internal Server Error"):
        launch_cloud(store_config(aws), boto_session=aws.session)

    assert aws.create_requests == []
    assert aws.keys() == []


def test_invalid_hyperparameters_are_refused_before_any_request(aws: Aws) -> None:
    cfg = store_config(aws, hyperparameters={"window_lenght": 32})

    with pytest.raises(
        LaunchConfigError, match=r"rejects the hyperparameters: unknown hyperparameters: \['--window_lenght'"
    ):
        launch_cloud(cfg, boto_session=aws.session, validate_role=False)

    assert aws.create_requests == []
    assert aws.session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_session_region_must_match_the_config(aws: Aws) -> None:
    with pytest.raises(LaunchConfigError, match="session is in eu-west-1, the config in us-east-1"):
        launch_cloud(
            store_config(aws), boto_session=boto3.Session(region_name="eu-west-1"), validate_role=False
        )


# --------------------------------------------------------------------------------------------------
# Configuration errors


def test_missing_role_is_a_clear_value_error(offsite_connections: list[object]) -> None:
    cfg = LaunchConfig.for_model_store(bucket=BUCKET, dataset="nab")

    with pytest.raises(ValueError, match="a SageMaker training job needs role_arn: the IAM execution role"):
        launch_cloud(cfg, boto_session=boto3.Session(region_name=REGION))

    assert offsite_connections == []


def test_every_missing_cloud_field_is_named() -> None:
    with pytest.raises(LaunchConfigError, match="needs role_arn, train_s3_uri, output_s3_uri"):
        LaunchConfig().require_cloud()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"role_arn": "edgeml-training"},
            "role_arn must be an IAM role ARN like arn:aws:iam::123456789012:role/name",
        ),
        ({"role_arn": "arn:aws:iam::12345:role/x"}, "role_arn must be an IAM role ARN"),
        ({"train_s3_uri": "https://bucket/datasets/nab/"}, "train_s3_uri must be an s3://bucket/prefix/ URI"),
        ({"output_s3_uri": "s3://Bad_Bucket/out/"}, "output_s3_uri has an invalid bucket name 'Bad_Bucket'"),
        ({"code_s3_uri": "s3://bucket/a//b"}, "code_s3_uri has an invalid key prefix 'a//b'"),
        ({"train_s3_uri": "s3://"}, "train_s3_uri has an invalid bucket name ''"),
        ({"instance_count": 0}, "instance_count must be >= 1"),
        ({"instance_type": "m5.large"}, "instance_type must be a SageMaker type"),
        ({"max_runtime_seconds": 0}, "max_runtime_seconds must be in"),
        ({"job_name_prefix": "edgeml_train"}, "job_name_prefix must be 1-41 characters"),
        ({"job_name_prefix": "x" * 42}, "job_name_prefix must be 1-41 characters"),
        ({"job_name_prefix": "-x"}, "job_name_prefix must be 1-41 characters"),
        ({"region": "useast1"}, "region must look like us-east-1"),
        ({"entry_script": "train.sh"}, "entry_script must be a .py file"),
        ({"tags": {"aws:owner": "x"}}, "invalid tag 'aws:owner'"),
        ({"hyperparameters": {"model_dir": "/tmp/m"}}, "'model_dir' is a path the job takes from its SM_"),
        ({"hyperparameters": {"sagemaker_program": "x"}}, "sagemaker_ prefix is reserved"),
        ({"hyperparameters": {"use-gpu": 1}}, "must match"),
        ({"hyperparameters": {"robust": True}}, "must be a str, int or float, got bool"),
        ({"hyperparameters": {"ridge_alpha": float("nan")}}, "must be finite"),
    ],
)
def test_invalid_config_raises_value_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        LaunchConfig(**overrides)  # type: ignore[arg-type]

    assert isinstance(caught.value, LaunchConfigError)


def test_bad_dataset_name_is_refused() -> None:
    with pytest.raises(ValueError, match="dataset 'a/b' must be 1-128 characters"):
        LaunchConfig.for_model_store(bucket=BUCKET, dataset="a/b")


def test_code_location_defaults_to_the_output_bucket() -> None:
    cfg = LaunchConfig(
        role_arn="arn:aws:iam::123456789012:role/r",
        train_s3_uri="s3://data-bucket/datasets/x/",
        output_s3_uri="s3://store-bucket/training-output/",
    )

    assert str(cfg.code_location()) == "s3://store-bucket/code/"


def test_training_image_resolves_offline(offsite_connections: list[object]) -> None:
    assert resolve_training_image(LaunchConfig()) == SKLEARN_IMAGE_US_EAST_1
    assert resolve_training_image(LaunchConfig(region="eu-west-1")) == (
        "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-py312-cpu-py3"
    )
    assert resolve_training_image(LaunchConfig(training_image="example.com/mine:1")) == "example.com/mine:1"
    assert offsite_connections == []


def test_container_requirements_match_the_project_pins() -> None:
    pins = {line.split("==")[0]: line for line in REPO_REQUIREMENTS.read_text().splitlines() if "==" in line}

    assert [pins[req.split("==")[0]] for req in DEFAULT_REQUIREMENTS] == list(DEFAULT_REQUIREMENTS)


# --------------------------------------------------------------------------------------------------
# Local


def test_run_local_writes_a_model_onnxruntime_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_MODEL_DIR", "/left/alone")
    cfg = LaunchConfig(hyperparameters={"window_length": 16, "model_version": "local-1", "train_rows": 1500})
    model_dir = tmp_path / "model"

    model_path = run_local(cfg, data_dir=nab_channel(tmp_path), model_dir=model_dir)

    assert model_path == model_dir / "model.onnx"
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert (metadata["window_length"], metadata["model_version"]) == ("16", "local-1")
    (scores,) = session.run(["score"], {"window": np.full((3, 16, 1), 70.0, dtype=np.float32)})
    assert scores.shape == (3,)
    assert np.isfinite(scores).all()
    assert (tmp_path / "output" / "data" / "metrics.json").is_file()
    # The process environment is back as it was.
    assert os.environ["SM_MODEL_DIR"] == "/left/alone"
    assert "SM_CHANNEL_TRAIN" not in os.environ
    assert "SM_OUTPUT_DIR" not in os.environ


def test_run_local_failure_raises_with_the_entry_points_reason(tmp_path: Path) -> None:
    data_dir = tmp_path / "train"
    data_dir.mkdir()
    write_csv(data_dir / "short.csv", ["timestamp", "value"], [[t, "1.0"] for t in timestamps(5)])

    with pytest.raises(LocalTrainingError, match="training exited with code 2: TooFewRowsError") as caught:
        run_local(LaunchConfig(), data_dir=data_dir, model_dir=tmp_path / "model")

    assert caught.value.exit_code == 2
    assert "SM_CHANNEL_TRAIN" not in os.environ


def test_run_local_refuses_an_entry_script_that_is_not_the_imported_module(tmp_path: Path) -> None:
    fake = tmp_path / "training"
    fake.mkdir()
    (fake / "train.py").write_text("def main(argv):\n    return 0\n")

    with pytest.raises(LaunchError, match="not to the entry script"):
        run_local(LaunchConfig(source_dir=fake), data_dir=tmp_path, model_dir=tmp_path / "m")


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_local_prints_the_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["local", "--data-dir", str(nab_channel(tmp_path)), "--model-dir", str(tmp_path / "m")]

    code = main([*argv, "-p", "window_length=16", "-p", "train_rows=1500"])

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out == {"status": "ok", "mode": "local", "model_path": str(tmp_path / "m" / "model.onnx")}
    assert Path(out["model_path"]).is_file()


def test_cli_cloud_prints_the_job(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "cloud",
        "--bucket",
        BUCKET,
        "--dataset",
        "nab",
        "--role-arn",
        aws.role_arn,
        "--skip-role-validation",
    ]

    code = main([*argv, "-p", "window_length=24", "--tag", "project=edgeml"], boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["status"], out["mode"]) == ("ok", "cloud")
    assert out["training_image"] == SKLEARN_IMAGE_US_EAST_1
    assert out["train_s3_uri"] == f"s3://{BUCKET}/datasets/nab/"
    job = describe(aws, out["training_job_name"])
    assert job["HyperParameters"]["window_length"] == "24"


def test_cli_config_error_exits_2_with_a_json_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cloud", "--bucket", BUCKET, "--dataset", "nab", "--role-arn", "not-an-arn"])

    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["status"] == "error"
    assert out["error"] == "LaunchConfigError"
    assert "role_arn must be an IAM role ARN" in out["message"]


def test_cli_training_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    code = main(["local", "--data-dir", str(empty), "--model-dir", str(tmp_path / "m")])

    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["error"] == "LocalTrainingError"


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["cloud", "--bucket", BUCKET])

    assert caught.value.code == 2
    assert "--dataset" in capsys.readouterr().err


def test_cli_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.launch", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "Exit codes: 0 done (a cloud job was created" in help_text
    assert "2 invalid arguments or config, 3 an AWS call failed" in help_text
    assert "{cloud,local}" in result.stdout


# --------------------------------------------------------------------------------------------------
# Hyperparameters: what the entry point sees is what was typed, locally and in the container

PRINT_DRIVER_COMMAND = (
    "import json; from distributed_drivers.basic_script_driver import create_commands; "
    "print(json.dumps(create_commands()))"
)


def driver_argv(stored: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The entry script's argv as the SDK's container scripts make it from the job's HyperParameters.

    As sm_train.sh does: scripts/environment.py writes the environment file, bash sources it, and
    distributed_drivers/basic_script_driver.py builds the command from SM_HPS.
    """
    from sagemaker.train.container_drivers.scripts import environment

    monkeypatch.setenv("TRAINING_JOB_NAME", "job")
    env_file = tmp_path / "sm_training.env"
    resources = {
        "current_host": "algo-1",
        "current_instance_type": "ml.m5.large",
        "hosts": ["algo-1"],
        "network_interface_name": "eth0",
    }
    environment.set_env(resources, {}, stored, output_file=str(env_file))
    drivers = Path(environment.__file__).resolve().parents[1]
    script = f"source {shlex.quote(str(env_file))} && {sys.executable} -c {shlex.quote(PRINT_DRIVER_COMMAND)}"
    done = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "SM_ENTRY_SCRIPT": "train.py", "PYTHONPATH": str(drivers)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    command: list[str] = json.loads(done.stdout.splitlines()[-1])
    return command[2:]


CONTAINER_VALUES = [
    "pump-1",
    "32",
    "0.995",
    "1e-1",
    "1.10",
    '"1.10"',
    "1e3",
    '["value","temp"]',
    '"temp"',
    "a b",
    'say "hi"',
    "Grüße",
    "",
]


def test_local_argv_is_the_containers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hyperparameters: dict[str, str | int | float] = {f"h{i}": v for i, v in enumerate(CONTAINER_VALUES)}
    hyperparameters.update(window_length=32, ridge_alpha=1e-3)

    local = entry_point_args(hyperparameters)

    assert local == driver_argv(job_hyperparameters(hyperparameters), tmp_path, monkeypatch)
    # Two of the rewrites the launcher refuses for train.py (see below): 1.10 -> 1.1, "1.10" -> 1.1.
    assert local[local.index("--h4") + 1] == local[local.index("--h5") + 1] == "1.1"


def test_a_single_quote_breaks_the_containers_environment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AssertionError, match=r"unexpected EOF|unexpected end of file"):
        driver_argv({"model_name": "pump's"}, tmp_path, monkeypatch)
    with pytest.raises(LaunchConfigError, match="'model_name' contains a single quote"):
        LaunchConfig(hyperparameters={"model_name": "pump's"})


@pytest.mark.parametrize(
    ("name", "value", "seen"),
    [
        ("model_version", "1.10", "'1.1'"),
        ("model_version", "2.0e1", "'20.0'"),
        ("model_version", "1.50", "'1.5'"),
        ("model_name", "1e3", "'1000.0'"),
    ],
)
def test_values_the_container_would_rewrite_are_refused(
    aws: Aws, capsys: pytest.CaptureFixture[str], name: str, value: str, seen: str
) -> None:
    code = main([*cloud_argv(aws), "-p", f"{name}={value}"], boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["error"] == "LaunchConfigError"
    assert f"hyperparameter {name}={value!r} would reach the entry point as {seen}" in out["message"]
    assert aws.keys() == []
    assert aws.create_requests == []


def test_rewrites_the_entry_point_reads_the_same_pass(aws: Aws) -> None:
    hyperparameters = {"ridge_alpha": "1e-3", "threshold_quantile": "0.995", "channels": '["value","temp"]'}

    name = launch_cloud(
        store_config(aws, hyperparameters=hyperparameters), boto_session=aws.session, validate_role=False
    )

    # Stored as typed; the container hands train.py 0.001 and a re-spaced list, which it reads the same.
    assert {
        k: v for k, v in describe(aws, name)["HyperParameters"].items() if k in hyperparameters
    } == hyperparameters


def test_a_json_quoted_value_is_refused_too(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    # The natural escape, '"1.10"', reached train.py as 1.10 locally but as 1.1 in the container.
    code = main([*cloud_argv(aws), "-p", 'model_version="1.10"'], boto_session=aws.session)

    assert code == 2
    assert "the entry point rejects the hyperparameters" in json.loads(capsys.readouterr().out)["message"]
    assert aws.keys() == []


def test_a_local_run_refuses_what_a_cloud_run_would_rewrite(tmp_path: Path) -> None:
    cfg = LaunchConfig(hyperparameters={"model_version": "1.10", "train_rows": 1500})

    with pytest.raises(
        LaunchConfigError, match=re.escape("model_version='1.10' would reach the entry point as '1.1'")
    ):
        run_local(cfg, data_dir=nab_channel(tmp_path), model_dir=tmp_path / "model")

    assert not (tmp_path / "model").exists()


# --------------------------------------------------------------------------------------------------
# The model name, job names and code prefixes


def test_the_job_always_carries_a_model_name(aws: Aws) -> None:
    default = launch_cloud(store_config(aws), boto_session=aws.session, validate_role=False)
    given = launch_cloud(
        store_config(aws, hyperparameters={"model_name": "pump"}),
        boto_session=aws.session,
        validate_role=False,
    )

    # The publisher names a model after this hyperparameter, and after the job when it is missing.
    assert describe(aws, default)["HyperParameters"]["model_name"] == "anomaly-detector"
    assert describe(aws, given)["HyperParameters"]["model_name"] == "pump"


def test_launches_in_the_same_second_get_their_own_names_and_code(aws: Aws) -> None:
    aws.client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

    names = [
        launch_cloud(store_config(aws), boto_session=aws.session, validate_role=False, clock=lambda: FROZEN)
        for _ in range(2)
    ]

    assert names[0] != names[1]
    assert all(re.fullmatch(r"edgeml-train-20261125120000-[a-z0-9]{6}", name) for name in names)
    assert aws.job_names() == sorted(names)
    for name in names:
        prefix = f"code/edgeml-train/{name}/input/code/training/train.py"
        versions = aws.client("s3").list_object_versions(Bucket=BUCKET, Prefix=prefix)["Versions"]
        assert len(versions) == 1


def test_an_existing_code_prefix_is_never_overwritten(aws: Aws) -> None:
    aws.client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

    def launch() -> str:  # the same clock and token: the same job name
        return launch_cloud(
            store_config(aws),
            boto_session=aws.session,
            validate_role=False,
            clock=lambda: FROZEN,
            token=lambda: "abc123",
        )

    first = launch()

    with pytest.raises(LaunchError, match=f"code/edgeml-train/{first}/ already holds objects"):
        launch()

    assert aws.job_names() == [first]
    key = f"code/edgeml-train/{first}/input/code/training/train.py"
    assert len(aws.client("s3").list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1


# --------------------------------------------------------------------------------------------------
# After CreateTrainingJob: a created job is reported as created, an unanswered one with its name


def _refuse(operation: str, code: str) -> Any:
    def answer(**_: object) -> Any:
        error = {"Error": {"Code": code, "Message": f"{operation} refused by the test"}}
        return types.SimpleNamespace(status_code=400, headers={}), error

    return answer


def test_a_failing_describe_after_create_does_not_fail_the_launch(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    # The caller may create jobs but not describe them (or is throttled): the job still exists.
    aws.session.events.register(
        "before-call.sagemaker.DescribeTrainingJob", _refuse("DescribeTrainingJob", "ThrottlingException")
    )

    code = main(cloud_argv(aws), boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert (code, out["status"]) == (0, "ok")
    assert aws.job_names() == [out["training_job_name"]]


def test_a_create_without_an_answer_reports_the_job_name_and_unknown(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    def timeout(**_: object) -> None:
        raise ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com")

    aws.session.events.register("before-call.sagemaker.CreateTrainingJob", timeout)

    code = main(cloud_argv(aws), boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert code == 3
    assert (out["status"], out["error"]) == ("unknown", "JobStateUnknownError")
    assert re.fullmatch(r"edgeml-train-\d{14}-[a-z0-9]{6}", out["training_job_name"])
    assert f"--training-job-name {out['training_job_name']}` before launching again" in out["message"]


def test_resource_in_use_for_the_fresh_name_means_an_earlier_attempt_created_it(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a retried request meets when its first attempt created the job but the answer was lost.
    sagemaker = boto3.Session(region_name=REGION).client("sagemaker")

    def first_attempt_went_through(**_: object) -> Any:
        sagemaker.create_training_job(**aws.create_requests[-1])
        return _refuse("CreateTrainingJob", "ResourceInUse")()

    aws.session.events.register("before-call.sagemaker.CreateTrainingJob", first_attempt_went_through)

    code = main(cloud_argv(aws), boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert (code, out["status"]) == (0, "created")
    assert aws.job_names() == [out["training_job_name"]]
    assert "was created, but CreateTrainingJob answered" in out["warning"]
    assert "ResourceInUse" in out["warning"]


def test_unknown_state_is_a_launch_error_carrying_the_name(aws: Aws) -> None:
    def timeout(**_: object) -> None:
        raise ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com")

    aws.session.events.register("before-call.sagemaker.CreateTrainingJob", timeout)

    with pytest.raises(JobStateUnknownError) as caught:
        launch_cloud(store_config(aws), boto_session=aws.session, validate_role=False)

    assert caught.value.training_job_name.startswith("edgeml-train-")
    assert isinstance(caught.value, LaunchError)


# --------------------------------------------------------------------------------------------------
# AWS failures during the upload


class _Body(io.BytesIO):
    def stream(self, *_: object, **__: object) -> Iterator[bytes]:
        yield self.getvalue()


def deny_code_uploads(session: boto3.Session) -> None:
    """S3 answers every code upload with 403, as it does without kms:GenerateDataKey on the bucket key."""
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
        b"<Message>not authorized to perform: kms:GenerateDataKey</Message></Error>"
    )

    def deny(request: Any, **_: object) -> AWSResponse | None:
        if request.method == "PUT" and "/code/" in request.url:
            return AWSResponse(request.url, 403, {}, _Body(body))
        return None

    session.events.register("before-send.s3.PutObject", deny)


def test_a_refused_upload_exits_3_with_a_json_error(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    deny_code_uploads(aws.session)

    code = main(cloud_argv(aws), boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert code == 3
    assert (out["status"], out["error"]) == ("error", "S3UploadFailedError")
    assert "AccessDenied" in out["message"]
    assert aws.create_requests == []


# --------------------------------------------------------------------------------------------------
# SageMaker's limits, from botocore's model, checked before anything is uploaded


def test_limits_come_from_the_botocore_model() -> None:
    limits = service_limits()

    assert (limits.hyperparameters_max, limits.hyperparameter_value_max, limits.hyperparameter_key_max) == (
        100,
        2500,
        256,
    )
    assert (limits.tags_max, limits.tag_key_max, limits.tag_value_max, limits.job_name_max) == (
        50,
        128,
        256,
        63,
    )
    assert limits.tag_value_charset.allows("Grüße an 7 :/=+-@_.")
    assert not limits.tag_value_charset.allows("ml#1")
    assert not limits.tag_key_charset.allows("a,b")


def test_charset_translation_refuses_what_it_cannot_read() -> None:
    assert charset_from_pattern(r"[\p{L}_\-]*").allows("aB_-")
    with pytest.raises(ValueError, match="unsupported range"):
        charset_from_pattern("[a-z]*")
    with pytest.raises(ValueError, match="unsupported botocore pattern"):
        charset_from_pattern("[a-z]+")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hyperparameters": {"channels": "x" * 2501}},
            "'channels' is 2501 characters long: SageMaker accepts",
        ),
        (
            {"hyperparameters": {f"h{i}": 1 for i in range(101)}},
            "101 hyperparameters: SageMaker accepts at most 100",
        ),
        ({"tags": {f"k{i}": "v" for i in range(51)}}, "51 tags: SageMaker accepts at most 50"),
        ({"tags": {"team": "ml#1"}}, "invalid tag 'team'='ml#1': the value may hold only letters"),
        ({"tags": {"a,b": "x"}}, "invalid tag 'a,b'='x': the key may hold only"),
        ({"tags": {"AWS:owner": "x"}}, "invalid tag 'AWS:owner': the aws: prefix"),
        ({"tags": {"Aws:owner": "x"}}, "the aws: prefix"),
        ({"tags": {"k" * 129: "x"}}, "keys are 1-128 characters"),
        ({"tags": {"": "x"}}, "keys are 1-128 characters"),
        ({"tags": {"team": "v" * 257}}, "its value is 257 characters, at most 256"),
        ({"output_kms_key": "my key"}, "output_kms_key must be a KMS key ARN like arn:aws:kms:"),
        ({"volume_kms_key": ""}, "volume_kms_key must be a KMS key ARN like arn:aws:kms:"),
        ({"output_kms_key": KEY_ARN + "x" * 2048}, "(at most 2048 characters)"),
    ],
)
def test_service_limits_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(LaunchConfigError, match=re.escape(message)):
        LaunchConfig(**overrides)  # type: ignore[arg-type]


def test_limits_at_their_maximum_pass() -> None:
    LaunchConfig(
        hyperparameters={"edge_postprocess": "x" * 2500, **{f"h{i}": 1 for i in range(99)}},
        tags={**{f"k{i}": "v" for i in range(49)}, "Team Grüße": "a b:/=+-@_." + "v" * 245},
    )


def test_the_added_model_name_counts_towards_the_limit(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An entry point that takes any hyperparameter (train.py has far fewer than 100).
    package = tmp_path / "anyparams"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(
        "import types\n"
        "def parse_args(argv):\n    return types.SimpleNamespace(model_name='anything')\n"
        "def main(argv):\n    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = store_config(aws, source_dir=package, hyperparameters={f"h{i}": 1 for i in range(100)})

    with pytest.raises(LaunchConfigError, match="101 hyperparameters"):
        launch_cloud(cfg, boto_session=aws.session, validate_role=False)

    assert aws.keys() == []


def test_a_limit_breach_exits_2_before_any_upload(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*cloud_argv(aws), "--tag", "cost center=ml#1"], boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert (code, out["error"]) == (2, "LaunchConfigError")
    assert aws.keys() == []


# --------------------------------------------------------------------------------------------------
# KMS

KEY_ID = KEY_ARN.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    "key",
    [
        "alias/edgeml-dev-models",
        KEY_ID,
        "arn:aws:kms:us-east-1:123456789012:alias/edgeml-dev-models",
        f"arn:aws:s3:::bucket/{KEY_ID}",
    ],
)
@pytest.mark.parametrize("label", ["output_kms_key", "volume_kms_key"])
def test_a_kms_key_that_is_no_key_arn_is_refused(label: str, key: str) -> None:
    # SageMaker takes aliases and bare ids, but the role check (job_role_permissions) can only simulate
    # KMS actions on the key's ARN: it used to skip them silently.
    with pytest.raises(LaunchConfigError) as caught:
        LaunchConfig.for_model_store(bucket=BUCKET, dataset="nab", role_arn=ROLE_ARN, **{label: key})
    assert str(caught.value) == (
        f"{label} must be a KMS key ARN like arn:aws:kms:us-east-1:123456789012:key/<key id> (at most 2048 "
        f"characters), got {key!r}: the execution role's KMS permissions are checked on the key's ARN, "
        "which an alias or a bare key id does not give. aws kms describe-key --key-id <alias or id> "
        "--query KeyMetadata.Arn prints it"
    )


def test_key_arns_pass_and_the_output_keys_permissions_are_checked() -> None:
    for key in (KEY_ARN, f"arn:aws-cn:kms:cn-north-1:123456789012:key/mrk-{KEY_ID.replace('-', '')}"):
        cfg = LaunchConfig.for_model_store(
            bucket=BUCKET, dataset="nab", role_arn=ROLE_ARN, output_kms_key=key, volume_kms_key=key
        )
        needs = job_role_permissions(cfg, cfg.job_layout("edgeml-train-20261125000000-abcdef"))
        assert [(p.action, p.resource) for p in needs if p.action.startswith("kms:")] == [
            ("kms:GenerateDataKey", key),
            ("kms:Encrypt", key),
            ("kms:Decrypt", key),
        ]


@pytest.mark.parametrize(
    ("flags", "variable"),
    [
        (["--output-kms-key", "alias/edgeml-dev-models"], None),
        (["--volume-kms-key", KEY_ID], None),
        ([], "TRAINING_OUTPUT_KMS_KEY"),
        ([], "TRAINING_VOLUME_KMS_KEY"),
    ],
)
def test_an_alias_or_key_id_exits_2_before_any_upload(
    aws: Aws,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    variable: str | None,
) -> None:
    if variable is not None:
        monkeypatch.setenv(variable, "alias/edgeml-dev-models")

    code = main([*cloud_argv(aws), *flags], boto_session=aws.session)

    out = json.loads(capsys.readouterr().out)
    assert (code, out["error"]) == (2, "LaunchConfigError")
    assert "must be a KMS key ARN" in out["message"]
    assert aws.keys() == []
    assert aws.create_requests == []


def test_kms_keys_reach_the_request_from_flags_or_the_environment(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    monkeypatch.setenv("TRAINING_OUTPUT_KMS_KEY", key)

    assert main([*cloud_argv(aws), "--volume-kms-key", key], boto_session=aws.session) == 0
    assert main(cloud_argv(aws, "--output-kms-key", ""), boto_session=aws.session) == 2
    monkeypatch.delenv("TRAINING_OUTPUT_KMS_KEY")
    assert main(cloud_argv(aws), boto_session=aws.session) == 0

    with_keys, without = aws.create_requests
    assert with_keys["OutputDataConfig"]["KmsKeyId"] == key
    assert with_keys["ResourceConfig"]["VolumeKmsKeyId"] == key
    # The code is uploaded under the output key too (the SDK's choice), so the role needs Decrypt.
    code_key = channel_uri(with_keys, "code").removeprefix(f"s3://{BUCKET}/") + "/requirements.txt"
    head = aws.client("s3").head_object(Bucket=BUCKET, Key=code_key)
    assert head["SSEKMSKeyId"] == key
    assert "KmsKeyId" not in without["OutputDataConfig"]
    assert "VolumeKmsKeyId" not in without["ResourceConfig"]
    capsys.readouterr()
