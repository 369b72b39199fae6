"""The publisher's S3 conditional write against the errors real S3 answers.

The client is a real boto3 client with botocore's Stubber: each call is checked against the service model,
and the error is the one S3 sends (moto never answers a conditional write with 409).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from lambdas.publisher.adapters import S3ModelStore
from lambdas.publisher.errors import RetryableError

BUCKET = "edgeml-models"
KEY = "components/com.edgeml.AnomalyModel/1.0.0/model.onnx"
EXPECTED_PUT = {
    "Bucket": BUCKET,
    "Key": KEY,
    "Body": b"onnx",
    "IfNoneMatch": "*",
    "ContentType": "application/octet-stream",
    "Metadata": {},
}


@pytest.fixture
def s3() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_conditional_write_conflict_is_retryable(s3: tuple[Any, Stubber]) -> None:
    """409 ConditionalRequestConflict: another write to the key is in flight, and whether it lands is
    not known yet, so the invocation is retried rather than failed for good."""
    client, stubber = s3
    stubber.add_client_error(
        "put_object",
        service_error_code="ConditionalRequestConflict",
        service_message="A conflicting conditional operation is currently in progress against this resource.",
        http_status_code=409,
        expected_params=EXPECTED_PUT,
    )
    with pytest.raises(
        RetryableError, match=rf"writing s3://{BUCKET}/{KEY}: ConditionalRequestConflict: "
    ) as info:
        S3ModelStore(client).put_if_absent(BUCKET, KEY, b"onnx")
    assert isinstance(info.value.__cause__, ClientError)


def test_precondition_failed_means_the_key_exists(s3: tuple[Any, Stubber]) -> None:
    client, stubber = s3
    stubber.add_client_error(
        "put_object",
        service_error_code="PreconditionFailed",
        http_status_code=412,
        expected_params=EXPECTED_PUT,
    )
    assert S3ModelStore(client).put_if_absent(BUCKET, KEY, b"onnx") is False


def test_other_write_errors_are_not_disguised_as_retryable(s3: tuple[Any, Stubber]) -> None:
    client, stubber = s3
    stubber.add_client_error(
        "put_object", service_error_code="AccessDenied", http_status_code=403, expected_params=EXPECTED_PUT
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        S3ModelStore(client).put_if_absent(BUCKET, KEY, b"onnx")
