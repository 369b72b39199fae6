"""`edgeml train sagemaker` against moto: what it prints and exits with when AWS fails part-way.

The command builds its own boto3 session, so these tests hook the sessions it creates (``boto3.Session``
is wrapped for the test) to make S3 refuse the upload or CreateTrainingJob go unanswered.
"""

from __future__ import annotations

import io
import json
import re
import types
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from edgeml.cli import EXIT_AWS, EXIT_OK, main
from tests.support.moto import moto_server
from tests.training.launch_support import SAGEMAKER_TRUST

BUCKET = "edgeml-dev-models"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def role_arn(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    for name in ("TRAINING_OUTPUT_KMS_KEY", "TRAINING_VOLUME_KMS_KEY", "SAGEMAKER_VALIDATE_ROLE"):
        monkeypatch.delenv(name, raising=False)
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    arn: str = session.client("iam").create_role(
        RoleName="edgeml-training", AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST)
    )["Role"]["Arn"]
    return arn


def hook_sessions(monkeypatch: pytest.MonkeyPatch, event: str, handler: Callable[..., Any]) -> None:
    """Every boto3 session created during the test gets ``handler`` on ``event``."""
    real = boto3.Session

    def session(*args: Any, **kwargs: Any) -> boto3.Session:
        created = real(*args, **kwargs)
        created.events.register(event, handler)
        return created

    monkeypatch.setattr(boto3, "Session", session)


def train(role_arn: str, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = ["train", "sagemaker", "--bucket", BUCKET, "--dataset", "nab", "--role-arn", role_arn]
    code = main([*extra, *argv, "--skip-role-validation"], out=out)
    return code, out.getvalue()


class _Body(io.BytesIO):
    def stream(self, *_: object, **__: object) -> Iterator[bytes]:
        yield self.getvalue()


def test_a_refused_code_upload_is_an_aws_error(
    role_arn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = b"<Error><Code>AccessDenied</Code><Message>no kms:GenerateDataKey</Message></Error>"

    def deny(request: Any, **_: object) -> AWSResponse | None:
        if request.method == "PUT" and "/code/" in request.url:
            return AWSResponse(request.url, 403, {}, _Body(body))
        return None

    hook_sessions(monkeypatch, "before-send.s3.PutObject", deny)

    code, out = train(role_arn, "--json")

    assert code == EXIT_AWS
    assert out == ""
    assert "edgeml: AWS error: Failed to upload" in capsys.readouterr().err


def _no_answer(**_: object) -> None:
    raise ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com")


def test_an_unanswered_create_prints_the_job_name_as_json(
    role_arn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook_sessions(monkeypatch, "before-call.sagemaker.CreateTrainingJob", _no_answer)

    code, out = train(role_arn, "--json")

    assert code == EXIT_AWS
    document = json.loads(out)
    assert document["status"] == "unknown"
    assert re.fullmatch(r"edgeml-train-\d{14}-[a-z0-9]{6}", document["training_job_name"])
    assert f"--training-job-name {document['training_job_name']}" in capsys.readouterr().err


def test_an_unanswered_create_prints_the_job_name_as_text(
    role_arn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook_sessions(monkeypatch, "before-call.sagemaker.CreateTrainingJob", _no_answer)

    code, out = train(role_arn)

    assert code == EXIT_AWS
    assert re.fullmatch(r"status: unknown\ntraining_job_name: edgeml-train-\d{14}-[a-z0-9]{6}\n", out)
    assert "the job may exist" in capsys.readouterr().err


def test_a_job_created_by_an_earlier_attempt_is_reported_as_created(
    role_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    side = boto3.Session(region_name=REGION).client("sagemaker")

    def first_attempt_went_through(**_: object) -> Any:
        side.create_training_job(**sent[-1])
        error = {"Error": {"Code": "ResourceInUse", "Message": "Training job already exists"}}
        return types.SimpleNamespace(status_code=400, headers={}), error

    hook_sessions(
        monkeypatch,
        "provide-client-params.sagemaker.CreateTrainingJob",
        lambda params, **_: sent.append(params),
    )
    hook_sessions(monkeypatch, "before-call.sagemaker.CreateTrainingJob", first_attempt_went_through)

    code, out = train(role_arn)

    assert code == EXIT_OK
    assert "status: created\n" in out
    name = re.search(r"training_job_name: (\S+)", out)
    assert name is not None
    assert "warning: training job " + name[1] + " was created, but CreateTrainingJob answered" in out
    assert [j["TrainingJobName"] for j in side.list_training_jobs()["TrainingJobSummaries"]] == [name[1]]


def test_a_created_job_prints_status_ok_and_its_name(role_arn: str) -> None:
    code, out = train(role_arn, "--json")

    assert code == EXIT_OK
    document = json.loads(out)
    assert document["status"] == "ok"
    assert re.fullmatch(r"edgeml-train-\d{14}-[a-z0-9]{6}", document["training_job_name"])
