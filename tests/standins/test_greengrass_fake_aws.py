"""The fake's AWS-facing dependencies, with moto standing in for S3 and IoT."""

from __future__ import annotations

import base64
import hashlib
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from standins.greengrass_fake import GreengrassV2Fake, serve
from tests.standins.greengrass_helpers import REGION, group_arn, make_client, recipe

BUCKET = "edgeml-model-store"
KEY = "components/com.edgeml.AnomalyModel/1.0.0/model.onnx"


def _model_recipe(uri: str) -> bytes:
    manifests = [
        {
            "Platform": {"os": "linux"},
            "Lifecycle": {},
            "Artifacts": [{"URI": uri, "Unarchive": "NONE"}],
        }
    ]
    return recipe(name="com.edgeml.AnomalyModel", Manifests=manifests)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_artifact_digest_is_computed_from_the_s3_object(s3, service_model):
    payload = b"onnx-bytes" * 1000
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=payload)
    fake = GreengrassV2Fake(s3_client=s3, service_model=service_model)

    with serve(fake) as running:
        gg = make_client(running.endpoint_url)
        arn = gg.create_component_version(inlineRecipe=_model_recipe(f"s3://{BUCKET}/{KEY}"))["arn"]
        stored = json.loads(gg.get_component(arn=arn)["recipe"])

    artifact = stored["Manifests"][0]["Artifacts"][0]
    assert artifact["Algorithm"] == "SHA-256"
    assert artifact["Digest"] == base64.b64encode(hashlib.sha256(payload).digest()).decode()
    assert artifact["Unarchive"] == "NONE"
    assert fake.recipe("com.edgeml.AnomalyModel", "1.0.0")["Manifests"][0]["Artifacts"][0] == artifact


@pytest.mark.parametrize(
    "uri",
    [f"s3://{BUCKET}/components/missing/model.onnx", "s3://no-such-bucket/model.onnx"],
)
def test_inaccessible_artifact_is_a_validation_error_and_nothing_is_created(s3, service_model, uri):
    fake = GreengrassV2Fake(s3_client=s3, service_model=service_model)

    with serve(fake) as running:
        gg = make_client(running.endpoint_url)
        with pytest.raises(ClientError) as excinfo:
            gg.create_component_version(inlineRecipe=_model_recipe(uri))
        listed = gg.list_components()["components"]

    error = excinfo.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == (
        f"Failed to process artifact {uri} of com.edgeml.AnomalyModel-1.0.0: "
        "Specified artifact resource cannot be accessed"
    )
    assert listed == []


def test_group_membership_comes_from_iot_when_an_iot_client_is_given(service_model):
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        iot.create_thing_group(thingGroupName="fleet")
        for name in ["gw-1", "gw-2"]:
            iot.create_thing(thingName=name)
        iot.add_thing_to_thing_group(thingGroupName="fleet", thingName="gw-1")
        fake = GreengrassV2Fake(iot_client=iot, service_model=service_model)
        fake.register_core_device("gw-1")
        fake.register_core_device("gw-2")

        with serve(fake) as running:
            gg = make_client(running.endpoint_url)
            gg.create_component_version(inlineRecipe=recipe())
            deployment_id = gg.create_deployment(
                targetArn=group_arn("fleet"), components={"com.example.Hello": {"componentVersion": "1.0.0"}}
            )["deploymentId"]
            member = gg.list_effective_deployments(coreDeviceThingName="gw-1")["effectiveDeployments"]
            outsider = gg.list_effective_deployments(coreDeviceThingName="gw-2")["effectiveDeployments"]
            in_group = gg.list_core_devices(thingGroupArn=group_arn("fleet"))["coreDevices"]
        desired = fake.desired_deployments("gw-1")  # resolves membership through IoT: inside the mock

    assert [e["deploymentId"] for e in member] == [deployment_id]
    assert outsider == []
    assert [d["coreDeviceThingName"] for d in in_group] == ["gw-1"]
    assert [v.deployment_id for v in desired] == [deployment_id]
