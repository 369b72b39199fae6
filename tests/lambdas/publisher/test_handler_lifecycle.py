"""The publisher Lambda with LINEAGE_TABLE set: clients built from the environment, gate and lineage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.lifecycle.adapters import DynamoRegistry
from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA, ModelStatus
from lambdas.publisher import handler as handler_module
from lambdas.publisher.core import COPIED_FROM_METADATA
from lambdas.publisher.errors import ModelValidationError
from lambdas.publisher.events import model_key
from standins.greengrass_fake import GreengrassV2Fake, serve
from tests.lambdas.publisher.onnx_models import MODEL_VERSION, build_model
from tests.lambdas.publisher.test_events import eventbridge_s3
from tests.lambdas.publisher.test_handler import FakeLambdaContext
from tests.lambdas.publisher.test_publish_greengrass import BUCKET, ENVIRONMENT, TARGET, inference_recipe

FLEET = "arn:aws:iot:us-east-1:123456789012:thinggroup/fleet"
TABLE = "lineage"


def training_event(job: str, key: str) -> dict[str, Any]:
    return {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": {
            "TrainingJobName": job,
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/{key}"},
            "HyperParameters": {"model_name": "pump"},
        },
    }


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, Any]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(**LINEAGE_TABLE_SCHEMA.create_table_kwargs(TABLE))
        with serve(fake=GreengrassV2Fake(s3_client=s3)) as running:
            gg = boto3.client("greengrassv2", endpoint_url=running.endpoint_url, region_name="us-east-1")
            gg.create_component_version(inlineRecipe=inference_recipe())
            for name, value in {
                **ENVIRONMENT,
                "LINEAGE_TABLE": TABLE,
                "FLEET_THING_GROUP_ARN": FLEET,
                "GATE_POLICY": '{"floors": {"n_windows": {"min": 1000}}}',
            }.items():
                monkeypatch.setenv(name, value)
            monkeypatch.setenv("AWS_ENDPOINT_URL_GREENGRASSV2", running.endpoint_url)
            handler_module._dependencies.cache_clear()
            yield s3, ddb, gg
            handler_module._dependencies.cache_clear()


def test_gate_rejection_is_returned_recorded_and_deploys_nothing(aws: tuple[Any, Any, Any]):
    s3, ddb, gg = aws
    # The test model's training_metrics say n_windows = 100: under the configured floor of 1000.
    s3.put_object(Bucket=BUCKET, Key="out/job-1/model.onnx", Body=build_model())

    response = handler_module.handler(training_event("job-1", "out/job-1/model.onnx"), FakeLambdaContext())

    assert response["published"] == []
    outcomes = response["outcomes"]
    assert isinstance(outcomes, list)
    (outcome,) = outcomes
    assert outcome["outcome"] == "rejected"
    assert outcome["model"]["reason"] == "n_windows = 100 is below the floor 1000"
    model = DynamoRegistry(TABLE, ddb).get_model(outcome["model"]["model_version"])
    assert model is not None
    assert model.status is ModelStatus.REJECTED
    assert gg.list_deployments(targetArn=TARGET)["deployments"] == []
    assert json.dumps(response)


def test_accepted_model_goes_to_the_canary_and_is_recorded(
    aws: tuple[Any, Any, Any], monkeypatch: pytest.MonkeyPatch
):
    s3, ddb, gg = aws
    monkeypatch.setenv("GATE_POLICY", '{"floors": {"n_windows": {"min": 50}}}')
    handler_module._dependencies.cache_clear()
    s3.put_object(Bucket=BUCKET, Key="out/job-1/model.onnx", Body=build_model())

    response = handler_module.handler(training_event("job-1", "out/job-1/model.onnx"), FakeLambdaContext())

    published_list = response["published"]
    assert isinstance(published_list, list)
    (published,) = published_list
    assert published["target_arn"] == TARGET
    (deployment,) = gg.list_deployments(targetArn=TARGET)["deployments"]
    assert deployment["deploymentId"] == published["deployment_id"]
    registry = DynamoRegistry(TABLE, ddb)
    assert registry.model_for_job("job-1") == published["model_version"]
    (recorded,) = registry.deployments_for_target(TARGET)
    assert recorded.deployment_id == published["deployment_id"]


def test_the_s3_event_of_the_publishers_copy_changes_nothing_even_before_the_publish_is_recorded(
    aws: tuple[Any, Any, Any], monkeypatch: pytest.MonkeyPatch
):
    # The race: the invocation publishing job-1's model.tar.gz has written models/<name>/<version>/ but not
    # yet recorded the model when the copy's Object Created event is handled.
    s3, ddb, gg = aws
    monkeypatch.setenv("GATE_POLICY", '{"floors": {"n_windows": {"min": 50}}}')
    handler_module._dependencies.cache_clear()
    key = model_key("pump", MODEL_VERSION)
    source = f"s3://{BUCKET}/training-output/job-1/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=build_model(), Metadata={COPIED_FROM_METADATA: source})

    response = handler_module.handler(eventbridge_s3(key), FakeLambdaContext())

    assert response == {"published": [], "outcomes": []}
    assert DynamoRegistry(TABLE, ddb).get_model(MODEL_VERSION) is None
    assert gg.list_deployments(targetArn=TARGET)["deployments"] == []


def test_the_lineage_record_takes_the_models_own_name(
    aws: tuple[Any, Any, Any], monkeypatch: pytest.MonkeyPatch
):
    s3, ddb, _gg = aws
    monkeypatch.setenv("GATE_POLICY", '{"floors": {"n_windows": {"min": 50}}}')
    handler_module._dependencies.cache_clear()
    s3.put_object(
        Bucket=BUCKET,
        Key="out/job-1/model.onnx",
        Body=build_model(metadata={"model_name": "anomaly-detector"}),
    )
    event = training_event("edgeml-train-20261125120000", "out/job-1/model.onnx")
    del event["detail"]["HyperParameters"]  # launched without -p model_name=...

    response = handler_module.handler(event, FakeLambdaContext())

    published_list = response["published"]
    assert isinstance(published_list, list)
    (published,) = published_list
    assert published["model_uri"] == f"s3://{BUCKET}/{model_key('anomaly-detector', MODEL_VERSION)}"
    record = DynamoRegistry(TABLE, ddb).get_model(MODEL_VERSION)
    assert record is not None
    assert record.model_name == "anomaly-detector"


def test_a_contradicted_model_name_hyperparameter_is_refused_before_anything_is_recorded(
    aws: tuple[Any, Any, Any],
):
    s3, ddb, gg = aws
    s3.put_object(
        Bucket=BUCKET,
        Key="out/job-1/model.onnx",
        Body=build_model(metadata={"model_name": "anomaly-detector"}),
    )

    with pytest.raises(
        ModelValidationError, match="declares model_name 'anomaly-detector', but its training"
    ):
        handler_module.handler(training_event("job-1", "out/job-1/model.onnx"), FakeLambdaContext())

    registry = DynamoRegistry(TABLE, ddb)
    assert registry.get_model(MODEL_VERSION) is None
    assert registry.model_for_job("job-1") is None
    assert gg.list_deployments(targetArn=TARGET)["deployments"] == []


def test_a_model_key_the_model_contradicts_is_refused_before_anything_is_recorded(
    aws: tuple[Any, Any, Any],
):
    # edgeml publish model used to name the key after --model-name whatever the model said.
    s3, ddb, gg = aws
    key = model_key("anomaly-detector", MODEL_VERSION)
    s3.put_object(Bucket=BUCKET, Key=key, Body=build_model(metadata={"model_name": "pump"}))

    with pytest.raises(ModelValidationError, match="declares model_name 'pump', but its key names it"):
        handler_module.handler(eventbridge_s3(key), FakeLambdaContext())

    assert DynamoRegistry(TABLE, ddb).get_model(MODEL_VERSION) is None
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="components/")
    assert gg.list_deployments(targetArn=TARGET)["deployments"] == []
