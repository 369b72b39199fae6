"""The Lambda entry point end to end: environment → boto3 clients → moto S3 and the Greengrass v2 fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext
from moto import mock_aws

from lambdas.publisher import handler as handler_module
from lambdas.publisher.errors import BadEventError, ModelValidationError
from lambdas.publisher.events import model_key
from standins.greengrass_fake import GreengrassV2Fake, serve
from tests.lambdas.publisher.onnx_models import MODEL_VERSION, build_model
from tests.lambdas.publisher.test_events import eventbridge_s3, s3_notification, training_event
from tests.lambdas.publisher.test_publish_greengrass import (
    BUCKET,
    ENVIRONMENT,
    INFERENCE_COMPONENT,
    MODEL_COMPONENT,
    TARGET,
    inference_recipe,
)
from tests.lambdas.publisher.test_validation import tarball

KEY = model_key("pump", MODEL_VERSION)


class FakeLambdaContext(LambdaContext):
    def __init__(self) -> None:
        self._function_name = "edgeml-publisher"
        self._memory_limit_in_mb = 512
        self._invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:edgeml-publisher"
        self._aws_request_id = "3f1c6a2e-0000-4000-8000-000000000001"


@dataclass
class Environment:
    s3: Any
    gg: Any


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Environment]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        with serve(fake=GreengrassV2Fake(s3_client=s3)) as running:
            gg = boto3.client("greengrassv2", endpoint_url=running.endpoint_url, region_name="us-east-1")
            gg.create_component_version(inlineRecipe=inference_recipe())
            for name, value in ENVIRONMENT.items():
                monkeypatch.setenv(name, value)
            # The handler builds its own clients; only the Greengrass one needs pointing at the fake.
            monkeypatch.setenv("AWS_ENDPOINT_URL_GREENGRASSV2", running.endpoint_url)
            handler_module._dependencies.cache_clear()
            yield Environment(s3=s3, gg=gg)
            handler_module._dependencies.cache_clear()


def test_handler_publishes_the_model_of_an_s3_event(environment: Environment):
    environment.s3.put_object(Bucket=BUCKET, Key=KEY, Body=build_model())

    response = handler_module.handler(s3_notification(KEY), FakeLambdaContext())

    published_list = response["published"]
    assert isinstance(published_list, list)
    (published,) = published_list
    assert published["component_name"] == MODEL_COMPONENT
    assert published["component_version"] == "1.0.0"
    assert published["target_arn"] == TARGET
    assert published["model_version"] == MODEL_VERSION
    deployment = environment.gg.get_deployment(deploymentId=published["deployment_id"])
    assert deployment["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    merge = json.loads(deployment["components"][INFERENCE_COMPONENT]["configurationUpdate"]["merge"])
    assert merge["model"]["sha256"] == published["model_sha256"]
    assert json.dumps(response)  # the response is plain JSON for the Lambda runtime


def test_handler_raises_on_a_bad_event_and_logs_why(
    environment: Environment, caplog: pytest.LogCaptureFixture
):
    with pytest.raises(BadEventError, match="object is in bucket 'elsewhere'"):
        handler_module.handler(s3_notification(KEY, bucket="elsewhere"), FakeLambdaContext())
    (record,) = [r for r in caplog.records if r.getMessage() == "publish refused"]
    # The line as CloudWatch receives it: one JSON object with the reason and the invocation's identity.
    refusal = json.loads(handler_module.logger.registered_formatter.format(record))
    assert refusal["level"] == "ERROR"
    assert refusal["error_type"] == "BadEventError"
    assert "object is in bucket 'elsewhere'" in refusal["error"]
    assert refusal["function_request_id"] == "3f1c6a2e-0000-4000-8000-000000000001"
    assert environment.gg.list_deployments(targetArn=TARGET)["deployments"] == []


def test_handler_raises_on_a_bad_model_and_changes_nothing(environment: Environment):
    environment.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"not a model")
    with pytest.raises(ModelValidationError, match="not a loadable ONNX model"):
        handler_module.handler(s3_notification(KEY), FakeLambdaContext())
    names = [c["componentName"] for c in environment.gg.list_components()["components"]]
    assert names == [INFERENCE_COMPONENT]
    assert environment.gg.list_deployments(targetArn=TARGET)["deployments"] == []


def test_handler_skips_the_s3_event_of_the_copy_it_wrote_itself(
    environment: Environment, caplog: pytest.LogCaptureFixture
):
    source = "training-output/job-1/output/model.tar.gz"
    environment.s3.put_object(Bucket=BUCKET, Key=source, Body=tarball({"model.onnx": build_model()}))
    first = handler_module.handler(
        training_event(f"s3://{BUCKET}/{source}", hyperparameters={"model_name": "pump"}), FakeLambdaContext()
    )
    assert len(first["published"]) == 1  # type: ignore[arg-type]

    # EventBridge's Object Created event for the models/ copy that invocation wrote.
    echo = handler_module.handler(eventbridge_s3(KEY), FakeLambdaContext())

    assert echo == {"published": []}
    (record,) = [r for r in caplog.records if r.getMessage().startswith("the publisher's own copy")]
    line = json.loads(handler_module.logger.registered_formatter.format(record))
    assert line["copied_from"] == f"s3://{BUCKET}/{source}"
    assert len(environment.gg.list_deployments(targetArn=TARGET)["deployments"]) == 1


def test_a_training_job_without_model_name_is_published_under_the_models_own_name(environment: Environment):
    # What a launch without -p model_name=... produces: train.py writes its default name into the model.
    source = "training-output/edgeml-train-20261125120000/output/model.tar.gz"
    model = build_model(metadata={"model_name": "anomaly-detector"})
    environment.s3.put_object(Bucket=BUCKET, Key=source, Body=tarball({"model.onnx": model}))
    event = training_event(f"s3://{BUCKET}/{source}")
    event["detail"]["TrainingJobName"] = "edgeml-train-20261125120000"

    response = handler_module.handler(event, FakeLambdaContext())

    published_list = response["published"]
    assert isinstance(published_list, list)
    (published,) = published_list
    assert published["model_uri"] == f"s3://{BUCKET}/{model_key('anomaly-detector', MODEL_VERSION)}"
    keys = [o["Key"] for o in environment.s3.list_objects_v2(Bucket=BUCKET, Prefix="models/")["Contents"]]
    assert keys == [model_key("anomaly-detector", MODEL_VERSION)]


@pytest.mark.parametrize(
    ("hyperparameter", "metadata"),
    [
        ("pump", "anomaly-detector"),
        # A name the hyperparameter round trip rewrote on its way into the container.
        ("1e3", "1000.0"),
    ],
)
def test_a_model_name_hyperparameter_the_model_contradicts_publishes_nothing(
    environment: Environment, hyperparameter: str, metadata: str
):
    source = "training-output/job-1/output/model.tar.gz"
    model = build_model(metadata={"model_name": metadata})
    environment.s3.put_object(Bucket=BUCKET, Key=source, Body=tarball({"model.onnx": model}))
    event = training_event(f"s3://{BUCKET}/{source}", hyperparameters={"model_name": hyperparameter})

    with pytest.raises(ModelValidationError) as caught:
        handler_module.handler(event, FakeLambdaContext())

    assert str(caught.value) == (
        f"model at s3://{BUCKET}/{source} declares model_name {metadata!r}, but its training job "
        f"edgeml-pump-20261124 has the model_name hyperparameter {hyperparameter!r}; nothing was published"
    )
    assert "Contents" not in environment.s3.list_objects_v2(Bucket=BUCKET, Prefix="models/")
    assert "Contents" not in environment.s3.list_objects_v2(Bucket=BUCKET, Prefix="components/")
    names = [c["componentName"] for c in environment.gg.list_components()["components"]]
    assert names == [INFERENCE_COMPONENT]
    assert environment.gg.list_deployments(targetArn=TARGET)["deployments"] == []
