"""Shared by the launcher's tests: fake credentials, a socket guard, a moto-backed AWS, an IAM simulator.

moto has no iam:SimulatePrincipalPolicy. :class:`PolicySimulator` answers it from a list of policy
statements the way IAM evaluates identity policies (explicit deny wins; policy wildcards match; the
requested ARN is literal; a condition whose context key the request does not supply does not match),
so the launcher's role check, and any simulation the SageMaker SDK makes, meet a realistic answer.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import socket
import types
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.training.train_helpers import NAB_SLICE
from training.launch_config import LaunchConfig

REGION = "us-east-1"
ACCOUNT = "123456789012"
SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def use_fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    # No developer profile, config file or SDK switch may leak into the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "SAGEMAKER_VALIDATE_ROLE",
        "TRAINING_OUTPUT_KMS_KEY",
        "TRAINING_VOLUME_KMS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("SM_MODEL_DIR", "SM_CHANNEL_TRAIN", "SM_OUTPUT_DATA_DIR", "SM_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)


def guard_offsite(monkeypatch: pytest.MonkeyPatch) -> list[object]:
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


@dataclass(frozen=True)
class Aws:
    session: boto3.Session
    bucket: str
    role_arn: str
    create_requests: list[dict[str, Any]]

    def client(self, service: str) -> Any:
        return self.session.client(service)

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client("s3").list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for obj in listed.get("Contents", [])]

    def job_names(self) -> list[str]:
        summaries = self.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
        return sorted(s["TrainingJobName"] for s in summaries)

    def describe(self, name: str) -> dict[str, Any]:
        job: dict[str, Any] = self.client("sagemaker").describe_training_job(TrainingJobName=name)
        return job


@contextmanager
def moto_aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, *, bucket: str) -> Iterator[Aws]:
    """A reset moto with the model store bucket and a SageMaker-trusted role; requests are recorded."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=bucket)
    role = session.client("iam").create_role(
        RoleName="edgeml-training", AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST)
    )["Role"]
    requests: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: object) -> None:
        requests.append(dict(params))

    # Sees the request exactly as it is handed to botocore, including what moto does not store.
    session.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
    yield Aws(session=session, bucket=bucket, role_arn=role["Arn"], create_requests=requests)


def store_config(aws: Aws, **overrides: Any) -> LaunchConfig:
    return LaunchConfig.for_model_store(bucket=aws.bucket, dataset="nab", role_arn=aws.role_arn, **overrides)


def channel_uri(job: Mapping[str, Any], name: str) -> str:
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}
    return str(channels[name]["DataSource"]["S3DataSource"]["S3Uri"])


def download_prefix(aws: Aws, uri: str, dest: Path) -> Path:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = aws.client("s3")
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


# --- IAM policy simulation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    effect: str = "Allow"
    sid: str = ""
    # {"StringLike": {"s3:prefix": ["code/*"]}}
    conditions: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)

    def applies(self, action: str, resource: str, context: Mapping[str, Sequence[str]]) -> bool:
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in self.actions):
            return False
        if not any(fnmatch.fnmatchcase(resource, r) for r in self.resources):
            return False
        for operator, keys in self.conditions.items():
            if operator not in {"StringLike", "StringEquals"}:
                raise NotImplementedError(operator)
            for key, patterns in keys.items():
                given = context.get(key)
                if not given:
                    return False  # IAM: a missing context key does not satisfy the condition
                match = fnmatch.fnmatchcase if operator == "StringLike" else str.__eq__
                if not any(match(value, pattern) for value in given for pattern in patterns):
                    return False
        return True


@dataclass
class PolicySimulator:
    """Answers SimulatePrincipalPolicy from ``statements``; records every simulated action."""

    statements: list[Statement]
    caller_may_simulate: bool = True
    calls: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)

    def decide(self, action: str, resource: str, context: Mapping[str, Sequence[str]] | None = None) -> str:
        applying = [s for s in self.statements if s.applies(action, resource, context or {})]
        if any(s.effect == "Deny" for s in applying):
            return "explicitDeny"
        return "allowed" if applying else "implicitDeny"

    def install(self, session: boto3.Session) -> PolicySimulator:
        def stash(params: dict[str, Any], context: dict[str, Any], **_: object) -> None:
            context["simulation"] = dict(params)

        def answer(model: Any, context: dict[str, Any], **_: object) -> Any:
            if not self.caller_may_simulate:
                error = {
                    "Error": {
                        "Code": "AccessDenied",
                        "Message": "not authorized: iam:SimulatePrincipalPolicy",
                    }
                }
                return types.SimpleNamespace(status_code=403, headers={}), error
            params = context["simulation"]
            entries = {
                e["ContextKeyName"]: list(e["ContextKeyValues"]) for e in params.get("ContextEntries", [])
            }
            results = []
            for action in params["ActionNames"]:
                for resource in params.get("ResourceArns") or ["*"]:
                    self.calls.append((action, resource, entries))
                    results.append(
                        {
                            "EvalActionName": action,
                            "EvalResourceName": resource,
                            "EvalDecision": self.decide(action, resource, entries),
                        }
                    )
            return types.SimpleNamespace(status_code=200, headers={}), {
                "EvaluationResults": results,
                "IsTruncated": False,
            }

        # One simulator per session: installing another replaces it (clients created afterwards see it).
        for event, handler in (
            ("before-parameter-build.iam.SimulatePrincipalPolicy", stash),
            ("before-call.iam.SimulatePrincipalPolicy", answer),
        ):
            session.events.unregister(event, unique_id=f"policy-simulator:{event}")
            session.events.register(event, handler, unique_id=f"policy-simulator:{event}")
        return self

    def simulated_actions(self) -> set[str]:
        return {action for action, _, _ in self.calls}
