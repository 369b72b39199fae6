"""Throttled AWS calls surface as retryable errors, from every adapter the lifecycle uses.

botocore's ``Stubber`` makes the real client raise the ``ClientError`` AWS would send after botocore's own
retries are spent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.lifecycle.adapters import DynamoRegistry, EventsTableHeartbeats, GreengrassFleet
from lambdas.lifecycle.errors import RetryableError
from lambdas.lifecycle.registry import DeploymentRecord, LockRecord, ModelRecord, ModelStatus, Stage
from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.config import ThingGroupArn
from lambdas.publisher.errors import RetryableError as PublisherRetryableError

GROUP = ThingGroupArn.parse("arn:aws:iot:us-east-1:123456789012:thinggroup/edgeml-canary")
DEPLOYMENT = DeploymentRecord("d-1", GROUP.arn, Stage.FLEET, "v1", "c", "1.0.0", "2026", "test")
LOCK = LockRecord("me", "2026", 900)
MODEL = ModelRecord("v1", "pump", "s3://b/k", "0" * 64, ModelStatus.PUBLISHING, "2026", "2026")


def client(service: str, operation: str, code: str) -> Any:
    stubbed = boto3.client(service, region_name="us-east-1")
    stubber = Stubber(stubbed)
    stubber.add_client_error(operation, service_error_code=code, service_message="Rate exceeded")
    stubber.activate()
    return stubbed


@pytest.mark.parametrize(
    ("service", "operation", "code", "call"),
    [
        ("dynamodb", "get_item", "ThrottlingException", lambda c: DynamoRegistry("t", c).get_model("v1")),
        (
            "dynamodb",
            "query",
            "ProvisionedThroughputExceededException",
            lambda c: DynamoRegistry("t", c).deployments_for_target(GROUP.arn),
        ),
        (
            "dynamodb",
            "transact_write_items",
            "ThrottlingException",
            lambda c: DynamoRegistry("t", c).record_deployment(DEPLOYMENT),
        ),
        (
            "dynamodb",
            "put_item",
            "ThrottlingException",
            lambda c: DynamoRegistry("t", c).acquire_lock(LOCK, now=1),
        ),
        (
            "dynamodb",
            "update_item",
            "ThrottlingException",
            lambda c: DynamoRegistry("t", c).release_lock("me"),
        ),
        (
            "dynamodb",
            "put_item",
            "ProvisionedThroughputExceededException",
            lambda c: DynamoRegistry("t", c).claim_model(MODEL, claimant="me", now=1, expires_at=2),
        ),
        ("dynamodb", "query", "ThrottlingException", lambda c: EventsTableHeartbeats("t", c).recent("gw")),
        (
            "iot",
            "list_things_in_thing_group",
            "ThrottlingException",
            lambda c: GreengrassFleet(None, c).things_in_group(GROUP),
        ),
        (
            "greengrassv2",
            "list_effective_deployments",
            "ThrottlingException",
            lambda c: GreengrassFleet(c).device("gw"),
        ),
    ],
    ids=[
        "registry-get",
        "registry-query",
        "registry-write",
        "lock-take",
        "lock-release",
        "model-claim",
        "heartbeats",
        "iot-groups",
        "greengrass-device",
    ],
)
def test_lifecycle_adapters_raise_retryable(
    service: str, operation: str, code: str, call: Callable[[Any], object]
):
    with pytest.raises(RetryableError, match=f"{code}: Rate exceeded"):
        call(client(service, operation, code))


@pytest.mark.parametrize(
    ("service", "operation", "call"),
    [
        ("s3", "get_object", lambda c: S3ModelStore(c).read("b", "k", max_bytes=10)),
        ("greengrassv2", "create_component_version", lambda c: GreengrassComponents(c).create(b"{}")),
        ("greengrassv2", "list_deployments", lambda c: GreengrassDeployments(c).latest_for_target(GROUP.arn)),
        ("greengrassv2", "get_deployment", lambda c: GreengrassDeployments(c).get("d-1")),
    ],
    ids=["s3-read", "component-create", "deployments-latest", "deployment-get"],
)
def test_publisher_adapters_raise_retryable(service: str, operation: str, call: Callable[[Any], object]):
    with pytest.raises(PublisherRetryableError, match="ThrottlingException: Rate exceeded"):
        call(client(service, operation, "ThrottlingException"))


def test_a_refused_call_is_not_retryable():
    from lambdas.lifecycle.errors import RegistryError

    with pytest.raises(RegistryError, match="ResourceNotFoundException"):
        DynamoRegistry("t", client("dynamodb", "get_item", "ResourceNotFoundException")).get_model("v1")
