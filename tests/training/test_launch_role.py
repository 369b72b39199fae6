"""The launcher against the platform's own TrainingRole, with a caller that may simulate IAM policies.

The role's policy is synthesized from infra/ (the same CDK code that deploys it), and
:class:`PolicySimulator` answers iam:SimulatePrincipalPolicy from it, which moto cannot. This is where
the SageMaker SDK, left alone, stages the code where the role cannot read it, and where its generic role
check refuses the role; both are the launcher's decisions now.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.moto import moto_server
from tests.training.launch_support import (
    ACCOUNT,
    REGION,
    Aws,
    PolicySimulator,
    Statement,
    channel_uri,
    guard_offsite,
    moto_aws,
    store_config,
    use_fake_aws,
)
from training.launch import launch_cloud
from training.launch_config import LaunchConfigError

BUCKET = f"edgeml-dev-models-{ACCOUNT}-{REGION}"
MODEL_STORE_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0b7d6f2e-model-store"
PRIVATE_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/edgeml-train:1"
# What the SDK's generic role check simulates for training (sagemaker.core.helper.iam_role_resolver).
SDK_SMOKE_TEST_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "ec2:CreateNetworkInterface",
}


def _resolve(value: Any) -> str:
    """A CloudFormation value of the synthesized policy as the ARN it becomes in account ACCOUNT."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return str(delimiter).join(_resolve(part) for part in parts)
    if "Ref" in value:
        return {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::Region": REGION}[value["Ref"]]
    if "Fn::ImportValue" in value and "ModelStoreKey" in value["Fn::ImportValue"]:
        return MODEL_STORE_KEY
    raise ValueError(f"cannot resolve {value!r}")


def _listed(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


@pytest.fixture(scope="module")
def training_role() -> list[Statement]:
    """The EdgemlDevTraining role policy, synthesized from infra/ (a few seconds: jsii)."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from infra.config import read_cdk_json_context, select_environment
    from infra.stacks.model_store_stack import ModelStoreStack
    from infra.stacks.training_stack import TrainingStack

    context = {**read_cdk_json_context(Path(__file__).resolve().parents[2] / "cdk.json"), "env": "dev"}
    app = App(context=context)
    config = select_environment(context)
    store = ModelStoreStack(app, "EdgemlDevModelStore", config=config)
    stack = TrainingStack(app, "EdgemlDevTraining", config=config, model_store=store.model_store)
    (policy,) = Template.from_stack(stack).find_resources("AWS::IAM::Policy").values()
    return [
        Statement(
            sid=s.get("Sid", ""),
            effect=s["Effect"],
            actions=_listed(s["Action"]),
            resources=tuple(_resolve(r) for r in _listed(s["Resource"])),
            conditions=s.get("Condition", {}),
        )
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_fake_aws(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    offsite = guard_offsite(monkeypatch)
    with moto_aws(moto_url, monkeypatch, bucket=BUCKET) as running:
        yield running
    assert offsite == [], "a call left the machine instead of going to moto"


def _without(statements: list[Statement], action: str) -> list[Statement]:
    return [
        Statement(
            sid=s.sid,
            effect=s.effect,
            actions=tuple(a for a in s.actions if a != action),
            resources=s.resources,
            conditions=s.conditions,
        )
        for s in statements
    ]


def _object_arn(key: str) -> str:
    return f"arn:aws:s3:::{BUCKET}/{key}"


# --------------------------------------------------------------------------------------------------


def test_default_launch_stages_code_the_platforms_role_can_read(
    aws: Aws, training_role: list[Statement]
) -> None:
    iam = PolicySimulator(training_role).install(aws.session)

    name = launch_cloud(store_config(aws), boto_session=aws.session)

    (request,) = aws.create_requests
    code, drivers = channel_uri(request, "code"), channel_uri(request, "sm_drivers")
    assert code == f"s3://{BUCKET}/code/edgeml-train/{name}/input/code"
    assert drivers == f"s3://{BUCKET}/code/edgeml-train/{name}/input/sm_drivers"
    uploaded = aws.keys()
    assert uploaded, "nothing was uploaded"
    assert all(key.startswith(f"code/edgeml-train/{name}/input/") for key in uploaded), uploaded
    # The role can list both channels and read every file in them, as SageMaker will as the role.
    for uri in (code, drivers):
        prefix = uri.removeprefix(f"s3://{BUCKET}/")
        assert iam.decide("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": [prefix]}) == "allowed"
    assert {key: iam.decide("s3:GetObject", _object_arn(key)) for key in uploaded} == dict.fromkeys(
        uploaded, "allowed"
    )
    # The SDK's generic check (ECR, CloudWatch, EC2) never ran; the launcher's own one did.
    assert not SDK_SMOKE_TEST_ACTIONS & iam.simulated_actions()
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject"} <= iam.simulated_actions()
    assert "SAGEMAKER_VALIDATE_ROLE" not in os.environ


def test_code_goes_to_the_code_prefix_whatever_the_sdks_simulation_says(
    aws: Aws, training_role: list[Statement]
) -> None:
    # Without the launcher's role check too: the SDK's own staging decision simulates s3:PutObject on
    # <bucket>/* for the role, is denied, and would fall back to training-output/code/..., unreadable.
    PolicySimulator(training_role).install(aws.session)

    name = launch_cloud(store_config(aws), boto_session=aws.session, validate_role=False)

    assert aws.keys(f"code/edgeml-train/{name}/input/code/") != []
    assert aws.keys(f"code/edgeml-train/{name}/input/sm_drivers/") != []
    assert aws.keys("training-output/") == []


def test_the_role_check_names_what_the_role_may_not_do_before_any_upload(
    aws: Aws, training_role: list[Statement]
) -> None:
    PolicySimulator(_without(training_role, "s3:GetObject")).install(aws.session)

    with pytest.raises(LaunchConfigError) as caught:
        launch_cloud(store_config(aws), boto_session=aws.session)

    message = str(caught.value)
    assert "may not: s3:GetObject on arn:aws:s3:::" in message
    assert "/input/code/requirements.txt (to read the code channel)" in message
    assert f"{BUCKET}/datasets/nab/* (to read the train channel)" in message
    assert "ListBucket" not in message
    assert aws.keys() == []
    assert aws.create_requests == []


def test_a_caller_that_may_not_simulate_launches_with_a_warning(
    aws: Aws, training_role: list[Statement], caplog: pytest.LogCaptureFixture
) -> None:
    PolicySimulator(training_role, caller_may_simulate=False).install(aws.session)

    with caplog.at_level(logging.WARNING, logger="training.launch"):
        name = launch_cloud(store_config(aws), boto_session=aws.session)

    assert aws.job_names() == [name]
    assert "execution role not checked" in caplog.text


def test_the_output_kms_key_is_checked_and_sent(aws: Aws, training_role: list[Statement]) -> None:
    cfg = store_config(aws, output_kms_key=MODEL_STORE_KEY, volume_kms_key=MODEL_STORE_KEY)
    PolicySimulator(_without(training_role, "kms:Encrypt")).install(aws.session)
    with pytest.raises(LaunchConfigError, match=f"kms:Encrypt on {MODEL_STORE_KEY}"):
        launch_cloud(cfg, boto_session=aws.session)
    assert aws.create_requests == []

    with_encrypt = [*training_role, Statement(actions=("kms:Encrypt",), resources=(MODEL_STORE_KEY,))]
    PolicySimulator(with_encrypt).install(aws.session)
    launch_cloud(cfg, boto_session=aws.session)

    (request,) = aws.create_requests
    assert request["OutputDataConfig"]["KmsKeyId"] == MODEL_STORE_KEY
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == MODEL_STORE_KEY


def test_a_private_ecr_image_is_refused_unless_the_role_can_pull_it(
    aws: Aws, training_role: list[Statement]
) -> None:
    PolicySimulator(training_role).install(aws.session)
    with pytest.raises(LaunchConfigError, match="private ECR repository: the execution role would need"):
        launch_cloud(store_config(aws, training_image=PRIVATE_IMAGE), boto_session=aws.session)

    said_so = store_config(aws, training_image=PRIVATE_IMAGE, image_pull_by_role=True)
    with pytest.raises(LaunchConfigError, match="ecr:BatchGetImage on arn:aws:ecr:us-east-1:123456789012"):
        launch_cloud(said_so, boto_session=aws.session)
    assert aws.keys() == []

    ecr = [
        Statement(actions=("ecr:GetAuthorizationToken",), resources=("*",)),
        Statement(
            actions=("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
            resources=(f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/edgeml-train",),
        ),
    ]
    PolicySimulator([*training_role, *ecr]).install(aws.session)
    launch_cloud(said_so, boto_session=aws.session)
    (request,) = aws.create_requests
    assert request["AlgorithmSpecification"]["TrainingImage"] == PRIVATE_IMAGE
