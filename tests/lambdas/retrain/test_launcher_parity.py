"""The retrain request against the one training/launch.py sends, field by field.

The launcher goes through the SageMaker SDK (staging, upload, ``CreateTrainingJob``) to a moto server;
the retrain function then takes that job as its template, as it would in AWS, and builds its own request
without the SDK. Only the job name may differ: with the launcher's defaults, and with KMS keys and tags.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest

from lambdas.retrain.adapters import SageMakerTrainingJobs
from lambdas.retrain.config import RetrainConfig
from lambdas.retrain.core import training_job_request
from tests.lambdas.retrain.helpers import BUCKET, CONFIG, PREFIX, ROLE_ARN
from tests.support.moto import moto_server
from training.launch import launch_cloud
from training.launch_config import LaunchConfig

REGION = "us-east-1"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(scope="module")
def moto_server_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def moto_url(moto_server_url: str) -> str:
    # Empty per launch: moto lists training jobs unsorted, so an earlier launch could be the template.
    urllib.request.urlopen(urllib.request.Request(f"{moto_server_url}/moto-api/reset", method="POST")).close()
    return moto_server_url


@pytest.mark.parametrize(
    ("launch_options", "config"),
    [
        pytest.param({}, CONFIG, id="defaults"),
        # The model store's key on the output (MODEL_STORE_KEY_ARN for the function), a volume key and
        # tags given to the launcher only: the clone must carry the last two over from the template.
        pytest.param(
            {
                "output_kms_key": KEY_ARN,
                "volume_kms_key": KEY_ARN,
                "tags": {"cost-center": "ml", "owner": "team-a"},
            },
            replace(CONFIG, kms_key_arn=KEY_ARN),
            id="keys-and-tags",
        ),
    ],
)
def test_retrain_request_matches_the_launchers(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, launch_options: dict[str, Any], config: RetrainConfig
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    sent: list[dict[str, Any]] = []
    session.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: sent.append(dict(params))
    )
    launch = LaunchConfig.for_model_store(
        bucket=BUCKET,
        dataset=config.dataset,
        role_arn=ROLE_ARN,
        job_name_prefix=f"{PREFIX}-train",
        hyperparameters={"model_name": config.model_name, "window_length": 32},
        **launch_options,
    )
    launched = launch_cloud(launch, boto_session=session, validate_role=False)
    (launcher,) = sent

    template = SageMakerTrainingJobs(session.client("sagemaker")).newest_completed(PREFIX)
    assert template is not None
    assert template.name == launched
    ours = training_job_request(config, template, f"{PREFIX}-drift-20261124-204005")

    assert set(ours) == set(launcher)
    for field in sorted(set(launcher) - {"TrainingJobName"}):
        assert ours[field] == launcher[field], field
    assert ours["HyperParameters"] == {"model_name": "pump", "window_length": "32"}
    assert ours["TrainingJobName"] != launcher["TrainingJobName"]
    if launch_options:
        # Spelled out, so that the field-by-field loop cannot pass by both sides leaving them out.
        assert ours["ResourceConfig"]["VolumeKmsKeyId"] == KEY_ARN
        assert ours["OutputDataConfig"]["KmsKeyId"] == KEY_ARN
        assert ours["Tags"] == [{"Key": "cost-center", "Value": "ml"}, {"Key": "owner", "Value": "team-a"}]
