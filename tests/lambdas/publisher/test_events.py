from __future__ import annotations

from typing import Any

import pytest

from lambdas.publisher.errors import BadEventError
from lambdas.publisher.events import ArtifactKind, PublishRequest, parse_event

BUCKET = "edgeml-models"
KEY = "models/pump/20261124T201500Z-3f2a9c1d/model.onnx"


def s3_notification(
    key: str, *, bucket: str = BUCKET, event_name: str = "ObjectCreated:Put"
) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": event_name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket},
                    "object": {"key": key, "size": 10},
                },
            }
        ]
    }


def eventbridge_s3(key: str, *, bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "version": "0",
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": 10}},
    }


def training_event(
    uri: str, *, status: str = "Completed", hyperparameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "TrainingJobName": "edgeml-pump-20261124",
        "TrainingJobStatus": status,
        "ModelArtifacts": {"S3ModelArtifacts": uri},
    }
    if hyperparameters is not None:
        detail["HyperParameters"] = hyperparameters
    return {
        "version": "0",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": detail,
    }


def test_s3_notification_gives_a_version_addressed_request():
    (request,) = parse_event(s3_notification(KEY), model_bucket=BUCKET)
    assert request == PublishRequest(
        bucket=BUCKET,
        key=KEY,
        kind=ArtifactKind.ONNX,
        model_name="pump",
        expected_model_version="20261124T201500Z-3f2a9c1d",
        origin="s3-notification",
    )
    assert request.uri == f"s3://{BUCKET}/{KEY}"


def test_s3_notification_keys_are_url_decoded():
    (request,) = parse_event(
        s3_notification("models/pump%5Fline/2026%2D11%2D24/model.onnx"), model_bucket=BUCKET
    )
    assert request.key == "models/pump_line/2026-11-24/model.onnx"
    assert (request.model_name, request.expected_model_version) == ("pump_line", "2026-11-24")
    # '+' is an encoded space, which no model key may contain.
    with pytest.raises(
        BadEventError, match=r"model name 'pump line' in key 'models/pump line/v1/model.onnx'"
    ):
        parse_event(s3_notification("models/pump+line/v1/model.onnx"), model_bucket=BUCKET)


def test_every_record_of_a_notification_becomes_a_request():
    event = s3_notification(KEY)
    event["Records"].append(s3_notification("models/fan/v2/model.onnx")["Records"][0])
    requests = parse_event(event, model_bucket=BUCKET)
    assert [(r.model_name, r.expected_model_version) for r in requests] == [
        ("pump", "20261124T201500Z-3f2a9c1d"),
        ("fan", "v2"),
    ]


def test_eventbridge_object_created_gives_a_request():
    (request,) = parse_event(eventbridge_s3(KEY), model_bucket=BUCKET)
    assert (request.key, request.model_name, request.origin) == (KEY, "pump", "eventbridge-s3")


def test_eventbridge_keys_are_taken_literally():
    # EventBridge does not URL-encode keys, so an escape sequence is part of the name (and not allowed).
    with pytest.raises(BadEventError, match=r"model version 'v%2D1' in key"):
        parse_event(eventbridge_s3("models/pump/v%2D1/model.onnx"), model_bucket=BUCKET)


def test_training_job_tarball_is_named_by_its_model_and_declares_the_hyperparameter():
    uri = f"s3://{BUCKET}/training/edgeml-pump-20261124/output/model.tar.gz"
    (request,) = parse_event(training_event(uri, hyperparameters={"model_name": "pump"}), model_bucket=BUCKET)
    # The model's own model_name metadata decides once it is read (core.named_request); the
    # hyperparameter is what it must agree with, and the name for a model without that metadata.
    assert request == PublishRequest(
        bucket=BUCKET,
        key="training/edgeml-pump-20261124/output/model.tar.gz",
        kind=ArtifactKind.TARBALL,
        model_name="pump",
        expected_model_version=None,
        origin="sagemaker",
        training_job="edgeml-pump-20261124",
        named_by_model=True,
        declared_model_name="pump",
    )


def test_training_job_without_model_name_falls_back_to_the_job_name():
    # Only for a model whose metadata has no model_name either (the contract does not require one).
    (request,) = parse_event(training_event(f"s3://{BUCKET}/out/job/model.onnx"), model_bucket=BUCKET)
    assert (request.kind, request.model_name) == (ArtifactKind.ONNX, "edgeml-pump-20261124")
    assert (request.named_by_model, request.declared_model_name) == (True, None)


def test_training_job_pointing_at_a_version_addressed_model():
    (request,) = parse_event(training_event(f"s3://{BUCKET}/{KEY}"), model_bucket=BUCKET)
    assert (request.model_name, request.expected_model_version) == ("pump", "20261124T201500Z-3f2a9c1d")
    assert request.training_job == "edgeml-pump-20261124"
    # The key names the model, as for an S3 event.
    assert (request.named_by_model, request.declared_model_name) == (False, None)


def test_s3_requests_name_no_training_job():
    (request,) = parse_event(s3_notification(KEY), model_bucket=BUCKET)
    assert request.training_job is None


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            s3_notification(KEY, bucket="other"),
            "object is in bucket 'other'; the publisher only reads the model bucket 'edgeml-models'",
        ),
        (eventbridge_s3(KEY, bucket="other"), "object is in bucket 'other'"),
        (
            s3_notification(KEY, event_name="ObjectRemoved:Delete"),
            "is a 'ObjectRemoved:Delete' event; only ObjectCreated",
        ),
        (
            s3_notification("datasets/pump/train.csv"),
            "is not a model key; expected models/<model_name>/<model_version>/model.onnx",
        ),
        (eventbridge_s3("models/pump/model.onnx"), "'models/pump/model.onnx' is not a model key"),
        (
            training_event(f"s3://{BUCKET}/x/model.tar.gz", status="Failed"),
            "has status 'Failed'; only Completed jobs",
        ),
        (training_event("s3://other/x/model.tar.gz"), "object is in bucket 'other'"),
        (training_event(f"s3://{BUCKET}/x/weights.pt"), "is neither a model.tar.gz nor a model.onnx"),
        (training_event("https://example.com/model.tar.gz"), "is not an s3:// URI"),
        (
            {"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}},
            "unsupported event (source='aws.s3', detail-type='Object Deleted')",
        ),
        (
            {"source": "aws.sagemaker", "detail-type": "SageMaker Training Job State Change"},
            "event.detail is missing or not an object",
        ),
        ({"Records": []}, "S3 notification has no Records"),
        ({"Records": [{"eventSource": "aws:sqs", "eventName": "x"}]}, "Records[0] is not an S3 event"),
        (
            {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {}}}]},
            "Records[0].s3.bucket.name is missing",
        ),
        (["not", "an", "object"], "event must be a JSON object, got list"),
    ],
)
def test_unusable_events_are_refused_with_a_reason(event, message):
    with pytest.raises(BadEventError) as caught:
        parse_event(event, model_bucket=BUCKET)
    assert message in str(caught.value)
