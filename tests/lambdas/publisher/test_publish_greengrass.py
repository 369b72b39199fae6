"""The publisher's adapters and core against moto's S3 and our Greengrass v2 fake (real HTTP, botocore)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.config import PublisherConfig, load_config
from lambdas.publisher.core import (
    COPIED_FROM_METADATA,
    PublishResult,
    WaitPolicy,
    publish_model,
    publisher_copy_source,
)
from lambdas.publisher.errors import ModelNotFoundError, ModelValidationError, RetryableError
from lambdas.publisher.events import model_key, parse_event
from standins.greengrass_fake import GreengrassV2Fake, serve
from tests.lambdas.publisher.onnx_models import MODEL_VERSION, build_model
from tests.lambdas.publisher.test_events import eventbridge_s3, s3_notification, training_event
from tests.lambdas.publisher.test_validation import tarball

BUCKET = "edgeml-models"
TARGET = "arn:aws:iot:us-east-1:123456789012:thinggroup/pumps"
MODEL_COMPONENT = "com.edgeml.AnomalyModel"
INFERENCE_COMPONENT = "com.edgeml.AnomalyDetector"
KEY = model_key("pump", MODEL_VERSION)
ARTIFACT_KEY = f"components/{MODEL_COMPONENT}/1.0.0/model.onnx"
ENVIRONMENT = {
    "MODEL_BUCKET": BUCKET,
    "INFERENCE_COMPONENT_VERSION": "1.2.0",
    "TARGET_THING_GROUP_ARN": TARGET,
    "MAX_MODEL_BYTES": "1000000",
}


@dataclass
class Stack:
    s3: Any
    gg: Any
    fake: GreengrassV2Fake
    endpoint_url: str
    config: PublisherConfig

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    def publish(self, event: dict[str, Any]) -> list[PublishResult]:
        store = S3ModelStore(self.s3)
        components = GreengrassComponents(self.gg)
        deployments = GreengrassDeployments(self.gg)
        return [
            publish_model(
                request,
                config=self.config,
                store=store,
                components=components,
                deployments=deployments,
                sleep=lambda _seconds: None,
                wait=WaitPolicy(max_tries=3, delay_seconds=0.0),
            )
            for request in parse_event(event, model_bucket=BUCKET)
        ]

    def versions(self, name: str = MODEL_COMPONENT) -> list[str]:
        arn = f"arn:aws:greengrass:us-east-1:123456789012:components:{name}"
        items = self.gg.list_component_versions(arn=arn)["componentVersions"]
        return [item["componentVersion"] for item in items]

    def component_names(self) -> list[str]:
        return [c["componentName"] for c in self.gg.list_components()["components"]]

    def deployments(self, history: str = "ALL") -> list[dict[str, Any]]:
        deployments: list[dict[str, Any]] = self.gg.list_deployments(targetArn=TARGET, historyFilter=history)[
            "deployments"
        ]
        return deployments

    def latest_deployment(self) -> dict[str, Any]:
        (latest,) = self.deployments("LATEST_ONLY")
        deployment: dict[str, Any] = self.gg.get_deployment(deploymentId=latest["deploymentId"])
        return deployment


def inference_recipe() -> bytes:
    return json.dumps(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": INFERENCE_COMPONENT,
            "ComponentVersion": "1.2.0",
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "python3 -m anomaly_detector"}}],
        }
    ).encode()


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        # Versioned like the real model store, so a rewrite of a write-once key would show as a version.
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        with serve(fake=GreengrassV2Fake(s3_client=s3), host="127.0.0.1", port=0) as running:
            gg = boto3.client("greengrassv2", endpoint_url=running.endpoint_url, region_name="us-east-1")
            # The inference component is published once per code release, before any model.
            gg.create_component_version(inlineRecipe=inference_recipe())
            yield Stack(
                s3=s3,
                gg=gg,
                fake=running.fake,
                endpoint_url=running.endpoint_url,
                config=load_config(ENVIRONMENT),
            )


def test_publish_creates_the_component_version_and_deploys_both_components(stack: Stack):
    data = build_model()
    stack.put(KEY, data)
    (result,) = stack.publish(s3_notification(KEY))

    assert stack.versions() == ["1.0.0"]
    assert (result.component_version, result.component_created, result.deployment_created) == (
        "1.0.0",
        True,
        True,
    )
    assert result.model_sha256 == hashlib.sha256(data).hexdigest()
    recipe = json.loads(stack.gg.get_component(arn=result.component_arn, recipeOutputFormat="JSON")["recipe"])
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    # Devices download the released copy under components/, never the candidate under models/.
    assert artifact["URI"] == f"s3://{BUCKET}/{ARTIFACT_KEY}" == result.artifact_uri
    assert result.model_uri == f"s3://{BUCKET}/{KEY}"
    assert stack.s3.get_object(Bucket=BUCKET, Key=ARTIFACT_KEY)["Body"].read() == data
    # The fake computes the digest from the S3 object, as the service does: the artifact is readable.
    assert artifact["Algorithm"] == "SHA-256"
    assert artifact["Digest"] == base64.b64encode(hashlib.sha256(data).digest()).decode()

    deployment = stack.latest_deployment()
    assert deployment["deploymentId"] == result.deployment_id
    assert deployment["targetArn"] == TARGET
    assert set(deployment["components"]) == {MODEL_COMPONENT, INFERENCE_COMPONENT}
    assert deployment["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    inference = deployment["components"][INFERENCE_COMPONENT]
    assert inference["componentVersion"] == "1.2.0"
    merge = inference["configurationUpdate"]["merge"]
    assert isinstance(merge, str)
    assert json.loads(merge) == {
        "model": {
            "component": MODEL_COMPONENT,
            "version": "1.0.0",
            "sha256": hashlib.sha256(data).hexdigest(),
            "modelVersion": MODEL_VERSION,
        }
    }
    policies = deployment["deploymentPolicies"]
    assert policies["failureHandlingPolicy"] == "ROLLBACK"
    assert policies["componentUpdatePolicy"]["action"] == "NOTIFY_COMPONENTS"
    (criterion,) = deployment["iotJobConfiguration"]["abortConfig"]["criteriaList"]
    assert (criterion["action"], criterion["failureType"]) == ("CANCEL", "ALL")


def test_second_model_bumps_the_patch_and_keeps_unrelated_components(stack: Stack):
    # A baseline deployment made by someone else: the nucleus with a disk spooler, plus our detector.
    stack.gg.create_deployment(
        targetArn=TARGET,
        deploymentName="fleet-baseline",
        components={
            "aws.greengrass.Nucleus": {
                "componentVersion": "2.14.0",
                "configurationUpdate": {"merge": '{"mqtt":{"spooler":{"storageType":"Disk"}}}'},
            },
            INFERENCE_COMPONENT: {
                "componentVersion": "1.2.0",
                "configurationUpdate": {"merge": '{"stream":"pump-1"}'},
            },
        },
    )
    stack.put(KEY, build_model())
    stack.publish(s3_notification(KEY))
    second_key = model_key("pump", "20261125T090000Z-aaaa0001")
    second = build_model(metadata={"model_version": "20261125T090000Z-aaaa0001"})
    stack.put(second_key, second)
    (result,) = stack.publish(s3_notification(second_key))

    assert result.component_version == "1.0.1"
    assert stack.versions() == ["1.0.1", "1.0.0"]
    deployment = stack.latest_deployment()
    assert deployment["deploymentName"] == "fleet-baseline"
    assert deployment["components"]["aws.greengrass.Nucleus"] == {
        "componentVersion": "2.14.0",
        "configurationUpdate": {"merge": '{"mqtt":{"spooler":{"storageType":"Disk"}}}'},
    }
    assert deployment["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.1"
    merge = json.loads(deployment["components"][INFERENCE_COMPONENT]["configurationUpdate"]["merge"])
    assert merge["stream"] == "pump-1"
    assert merge["model"]["version"] == "1.0.1"
    assert merge["model"]["sha256"] == hashlib.sha256(second).hexdigest()
    assert len(stack.deployments("ALL")) == 3  # baseline, first model, second model


def test_republishing_the_same_model_changes_nothing(stack: Stack):
    stack.put(KEY, build_model())
    (first,) = stack.publish(s3_notification(KEY))
    (again,) = stack.publish(s3_notification(KEY))

    assert stack.versions() == ["1.0.0"]
    assert len(stack.deployments("ALL")) == 1
    assert (again.component_arn, again.deployment_id) == (first.component_arn, first.deployment_id)
    assert (again.component_created, again.deployment_created) == (False, False)
    assert again.artifact_uri == first.artifact_uri == f"s3://{BUCKET}/{ARTIFACT_KEY}"
    listed = stack.s3.list_object_versions(Bucket=BUCKET, Prefix="components/")["Versions"]
    assert [v["Key"] for v in listed] == [ARTIFACT_KEY]  # written once, not rewritten by the retry


def test_sagemaker_tarball_is_stored_version_addressed_and_published(stack: Stack):
    data = build_model()
    source = "training/edgeml-pump-1/output/model.tar.gz"
    stack.put(source, tarball({"model.onnx": data, "metrics.json": b"{}"}))
    uri = f"s3://{BUCKET}/{source}"
    (result,) = stack.publish(training_event(uri, hyperparameters={"model_name": "pump"}))

    stored = stack.s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert stored == data
    assert result.model_uri == f"s3://{BUCKET}/{KEY}"
    # The ObjectCreated event for that write arrives next; and SageMaker may redeliver its event.
    (from_s3,) = stack.publish(s3_notification(KEY))
    (redelivered,) = stack.publish(training_event(uri, hyperparameters={"model_name": "pump"}))
    assert {from_s3.component_version, redelivered.component_version} == {"1.0.0"}
    assert stack.versions() == ["1.0.0"]
    assert len(stack.deployments("ALL")) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x01garbage", "model file is not a loadable ONNX model"),
        (build_model(drop_metadata=["channels"]), "missing required keys: channels"),
        (build_model(input_name="x"), "exactly one input named 'window'"),
    ],
    ids=["corrupt-bytes", "missing-metadata", "wrong-input-name"],
)
def test_bad_model_creates_no_component_and_no_deployment(stack: Stack, data: bytes, message: str):
    stack.put(KEY, data)
    with pytest.raises(ModelValidationError) as caught:
        stack.publish(s3_notification(KEY))
    assert message in str(caught.value)
    assert stack.component_names() == [INFERENCE_COMPONENT]
    assert stack.deployments("ALL") == []


def test_an_orphaned_artifact_at_the_next_version_is_skipped_not_overwritten(stack: Stack):
    # What a publish leaves when it wrote the artifact and then failed for good before creating 1.0.0.
    data = build_model()
    stack.put(KEY, data)
    orphan = build_model(metadata={"detector": "other"})
    stack.put(ARTIFACT_KEY, orphan)
    (result,) = stack.publish(s3_notification(KEY))

    assert (result.component_version, result.skipped_versions) == ("1.0.1", ("1.0.0",))
    assert stack.versions() == ["1.0.1"]
    assert stack.s3.get_object(Bucket=BUCKET, Key=ARTIFACT_KEY)["Body"].read() == orphan
    artifact_1_0_1 = f"components/{MODEL_COMPONENT}/1.0.1/model.onnx"
    assert stack.s3.get_object(Bucket=BUCKET, Key=artifact_1_0_1)["Body"].read() == data
    # The version Greengrass created downloads this model, with this model's digest.
    arn = f"arn:aws:greengrass:us-east-1:123456789012:components:{MODEL_COMPONENT}:versions:1.0.1"
    recipe = json.loads(stack.gg.get_component(arn=arn, recipeOutputFormat="JSON")["recipe"])
    (artifact,) = recipe["Manifests"][0]["Artifacts"]
    assert artifact["URI"] == f"s3://{BUCKET}/{artifact_1_0_1}"
    deployed = stack.latest_deployment()["components"][MODEL_COMPONENT]["componentVersion"]
    assert deployed == "1.0.1"


def test_the_copy_of_a_sagemaker_archive_is_marked_and_recognised(stack: Stack):
    source = "training/edgeml pump-1/output/model.tar.gz"  # a space: S3 metadata must stay ASCII
    stack.put(source, tarball({"model.onnx": build_model()}))
    stack.publish(training_event(f"s3://{BUCKET}/{source}", hyperparameters={"model_name": "pump"}))

    head = stack.s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["Metadata"] == {
        COPIED_FROM_METADATA: f"s3://{BUCKET}/training/edgeml%20pump-1/output/model.tar.gz"
    }
    store = S3ModelStore(stack.s3)
    (echo,) = parse_event(eventbridge_s3(KEY), model_bucket=BUCKET)
    assert publisher_copy_source(echo, store) == f"s3://{BUCKET}/{source}"


def test_an_uploaded_model_has_no_copy_marker(stack: Stack):
    stack.put(KEY, build_model())
    store = S3ModelStore(stack.s3)
    assert store.metadata(BUCKET, KEY) == {}
    (request,) = parse_event(eventbridge_s3(KEY), model_bucket=BUCKET)
    assert publisher_copy_source(request, store) is None


def test_a_throttled_metadata_read_is_retryable():
    s3 = boto3.client("s3", region_name="us-east-1")
    stubber = Stubber(s3)
    stubber.add_client_error("head_object", service_error_code="SlowDown", service_message="Reduce rate")
    expected = f"reading the metadata of s3://{BUCKET}/{KEY}: SlowDown"
    with stubber, pytest.raises(RetryableError, match=expected):
        S3ModelStore(s3).metadata(BUCKET, KEY)


def test_metadata_of_a_missing_object_is_a_clear_error(stack: Stack):
    with pytest.raises(ModelNotFoundError, match=f"model object s3://{BUCKET}/{KEY} does not exist"):
        S3ModelStore(stack.s3).metadata(BUCKET, KEY)


def test_missing_object_is_a_clear_error_and_changes_nothing(stack: Stack):
    with pytest.raises(ModelNotFoundError, match=f"model object s3://{BUCKET}/{KEY} does not exist"):
        stack.publish(s3_notification(KEY))
    assert stack.component_names() == [INFERENCE_COMPONENT]
    assert stack.deployments("ALL") == []


def test_oversized_object_is_refused_before_download(stack: Stack):
    stack.put(KEY, build_model())
    small = S3ModelStore(stack.s3)
    with pytest.raises(ModelValidationError, match=r"is \d+ bytes; the limit is 10"):
        small.read(BUCKET, KEY, max_bytes=10)


def test_put_if_absent_never_overwrites(stack: Stack):
    store = S3ModelStore(stack.s3)
    assert store.put_if_absent(BUCKET, "models/x/1/model.onnx", b"first") is True
    assert store.put_if_absent(BUCKET, "models/x/1/model.onnx", b"second") is False
    assert stack.s3.get_object(Bucket=BUCKET, Key="models/x/1/model.onnx")["Body"].read() == b"first"


def test_unknown_component_has_no_versions(stack: Stack):
    components = GreengrassComponents(stack.gg)
    assert components.list_versions("arn:aws:greengrass:us-east-1:123456789012:components:nope") == []
