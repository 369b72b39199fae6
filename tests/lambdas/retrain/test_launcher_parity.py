"""The retrain request against the one training/launch.py sends, field by field.

The launcher goes through the SageMaker SDK (staging, upload, ``CreateTrainingJob``) to a moto server;
the retrain function then takes that job as its template, as it would in AWS, and builds its own request
without the SDK. Only the job name may differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from lambdas.retrain.adapters import SageMakerTrainingJobs
from lambdas.retrain.core import training_job_request
from tests.lambdas.retrain.helpers import BUCKET, CONFIG, PREFIX, ROLE_ARN
from tests.support.moto import moto_server
from training.launch import launch_cloud
from training.launch_config import LaunchConfig

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def test_retrain_request_matches_the_launchers(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
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
        dataset=CONFIG.dataset,
        role_arn=ROLE_ARN,
        job_name_prefix=f"{PREFIX}-train",
        hyperparameters={"model_name": CONFIG.model_name, "window_length": 32},
    )
    launched = launch_cloud(launch, boto_session=session, validate_role=False)
    (launcher,) = sent

    template = SageMakerTrainingJobs(session.client("sagemaker")).newest_completed(PREFIX)
    assert template is not None
    assert template.name == launched
    ours = training_job_request(CONFIG, template, f"{PREFIX}-drift-20261124-204005")

    assert set(ours) == set(launcher)
    for field in sorted(set(launcher) - {"TrainingJobName"}):
        assert ours[field] == launcher[field], field
    assert ours["HyperParameters"] == {"model_name": "pump", "window_length": "32"}
    assert ours["TrainingJobName"] != launcher["TrainingJobName"]
