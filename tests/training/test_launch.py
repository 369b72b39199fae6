"""training.launch against moto's SageMaker (cloud) and in-process (local).

The cloud tests run a moto server on a free port and point boto3 at it with AWS_ENDPOINT_URL, as the
demo does; a socket guard records any connection that would leave the machine.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from botocore.parsers import ResponseParserError

from tests.support.moto import moto_server
from tests.training.train_helpers import NAB_SLICE, timestamps, write_csv
from training.launch import (
    REQUIREMENTS_FILE,
    entry_point_args,
    job_hyperparameters,
    launch_cloud,
    main,
    resolve_training_image,
    run_local,
)
from training.launch_config import (
    DEFAULT_REQUIREMENTS,
    LaunchConfig,
    LaunchConfigError,
    LaunchError,
    LocalTrainingError,
)

REGION = "us-east-1"
BUCKET = "edgeml-model-store"
SKLEARN_IMAGE_US_EAST_1 = (
    "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-py312-cpu-py3"
)
SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
REPO_REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    # No developer profile, config file or SDK switch may leak into the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "SAGEMAKER_VALIDATE_ROLE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SM_MODEL_DIR", "SM_CHANNEL_TRAIN", "SM_OUTPUT_DATA_DIR", "SM_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def offsite_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to connect anywhere but the loopback interface (refused and recorded)."""
    attempts: list[object] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def is_local(host: object) -> bool:
        return host in {"127.0.0.1", "localhost", "::1"}

    def guarded_connect(self: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and is_local(address[0]):
            real_connect(self, address)
            return
        attempts.append(address)
        raise OSError(f"test guard: connection to {address!r} refused")

    # Name lookups too: without DNS a request to AWS fails before it ever reaches connect().
    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if is_local(host):
            return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]
        attempts.append(host)
        raise socket.gaierror(f"test guard: lookup of {host!r} refused")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return attempts


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@dataclass(frozen=True)
class Aws:
    session: boto3.Session
    role_arn: str
    create_requests: list[dict[str, object]]


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, offsite_connections: list[object]) -> Iterator[Aws]:
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    role = session.client("iam").create_role(
        RoleName="edgeml-training", AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST)
    )["Role"]
    requests: list[dict[str, object]] = []

    def capture(params: dict[str, object], **_: object) -> None:
        requests.append(dict(params))

    # Sees the request exactly as the SDK hands it to botocore, including what moto does not store.
    session.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
    yield Aws(session=session, role_arn=role["Arn"], create_requests=requests)
    assert offsite_connections == [], "a call left the machine instead of going to moto"


def store_config(aws: Aws, **overrides: object) -> LaunchConfig:
    return LaunchConfig.for_model_store(bucket=BUCKET, dataset="nab", role_arn=aws.role_arn, **overrides)


def describe(aws: Aws, name: str) -> dict[str, object]:
    job: dict[str, object] = aws.session.client("sagemaker").describe_training_job(TrainingJobName=name)
    return job


def channel_uri(job: dict[str, object], name: str) -> str:
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}  # type: ignore[attr-defined]
    return str(channels[name]["DataSource"]["S3DataSource"]["S3Uri"])


def download_prefix(aws: Aws, uri: str, dest: Path) -> Path:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = aws.session.client("s3")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")["Contents"]:
        target = dest / obj["Key"][len(prefix.rstrip("/")) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, obj["Key"], str(target))
    return dest


def nab_channel(tmp_path: Path) -> Path:
    data_dir = tmp_path / "train"
    data_dir.mkdir()
    shutil.copy(NAB_SLICE, data_dir / NAB_SLICE.name)
    return data_dir


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

    assert name.startswith("edgeml-nab-")
    job = describe(aws, name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == SKLEARN_IMAGE_US_EAST_1  # type: ignore[index]
    assert job["RoleArn"] == aws.role_arn == "arn:aws:iam::123456789012:role/edgeml-training"
    assert channel_uri(job, "train") == f"s3://{BUCKET}/datasets/nab/"
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/training-output/"  # type: ignore[index]
    resources = job["ResourceConfig"]
    assert (resources["InstanceType"], resources["InstanceCount"]) == ("ml.c5.xlarge", 2)  # type: ignore[index]
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800}
    ours = {"window_length": "32", "threshold_quantile": "0.99", "model_name": "pump-1"}
    recorded = job["HyperParameters"]
    assert {k: v for k, v in recorded.items() if k in ours} == ours  # type: ignore[attr-defined]
    assert all(k.startswith("sagemaker_") for k in recorded if k not in ours)  # type: ignore[attr-defined]
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
    job_environment: dict[str, str] = request["Environment"]  # type: ignore[assignment]
    env = {
        **os.environ,
        # The job's environment, with the container's /opt/ml relocated under tmp_path.
        **{k: v.replace("/opt/ml", str(opt_ml)) for k, v in job_environment.items()},
        "SM_ENTRY_SCRIPT": source_code["entry_script"],
        # As the SDK's scripts/environment.py builds it from the job's stored (string) hyperparameters.
        "SM_HPS": json.dumps({k: safe_deserialize(v) for k, v in job["HyperParameters"].items()}),  # type: ignore[attr-defined]
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
    assert "training/train.py --window_length 16 --model_version v7 --train_rows 1500" in result.stdout
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
    # moto has no iam:SimulatePrincipalPolicy: reaching it proves the SDK's role check ran.
    with pytest.raises(ResponseParserError, match="500 Internal Server Error"):
        launch_cloud(store_config(aws), boto_session=aws.session)

    assert aws.create_requests == []


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
        ({"job_name_prefix": "edgeml_train"}, "job_name_prefix must be 1-48 characters"),
        ({"job_name_prefix": "x" * 49}, "job_name_prefix must be 1-48 characters"),
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
    assert out["training_image"] == SKLEARN_IMAGE_US_EAST_1
    assert out["train_s3_uri"] == f"s3://{BUCKET}/datasets/nab/"
    job = describe(aws, out["training_job_name"])
    assert job["HyperParameters"]["window_length"] == "24"  # type: ignore[index]


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
    assert "Exit codes: 0 done, 1 the launch or the training failed, 2 invalid" in " ".join(
        result.stdout.split()
    )
    assert "{cloud,local}" in result.stdout
