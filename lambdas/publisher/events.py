"""Turn the invocation event into typed publish requests, or refuse it with a clear message.

Three shapes reach the publisher:

* an S3 event notification (``Records[].s3``), whose object keys are URL-encoded (``+`` for a space);
* an EventBridge ``Object Created`` event from S3 (``detail.bucket.name`` / ``detail.object.key``), whose
  keys are not encoded;
* an EventBridge ``SageMaker Training Job State Change`` event; only ``Completed`` jobs are published, from
  ``detail.ModelArtifacts.S3ModelArtifacts`` (SageMaker's ``model.tar.gz``, or a ``model.onnx``).

A model key (``models/<name>/<version>/model.onnx``) names its model. A training job's artifact does not:
the model's own ``model_name`` metadata does (``named_by_model``, resolved once the model is read, see
``core.named_request``), and a ``model_name`` hyperparameter must agree with it. Only for a model without
that metadata is the name the hyperparameter's, or else the job's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from urllib.parse import unquote_plus

from lambdas.publisher.errors import BadEventError

MODEL_FILE_NAME = "model.onnx"
# docs/contracts.md §2: models/ holds training output and candidates (rejected ones too); components/
# holds only what devices may download, so it is the one prefix the token-exchange role can read.
MODELS_PREFIX = "models/"
COMPONENTS_PREFIX = "components/"
# Model names and versions become S3 key segments and appear in recipes and logs: keep them plain.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MODEL_KEY = re.compile(r"^models/(?P<name>[^/]+)/(?P<version>[^/]+)/model\.onnx$")
_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<key>.+)$")

S3_SOURCE = "aws.s3"
S3_OBJECT_CREATED = "Object Created"
SAGEMAKER_SOURCE = "aws.sagemaker"
SAGEMAKER_TRAINING_STATE_CHANGE = "SageMaker Training Job State Change"
# PublishRequest.origin: which event announced the model.
ORIGIN_S3_NOTIFICATION = "s3-notification"
ORIGIN_EVENTBRIDGE_S3 = "eventbridge-s3"
ORIGIN_SAGEMAKER = "sagemaker"
# The origins that announce an object written to the model store (by anyone, the publisher included).
S3_EVENT_ORIGINS = frozenset({ORIGIN_S3_NOTIFICATION, ORIGIN_EVENTBRIDGE_S3})
# SageMaker has no notion of our model names; a launch may pass one as a hyperparameter, which the
# model's own model_name metadata must then agree with (module docstring).
MODEL_NAME_HYPERPARAMETER = "model_name"


class ArtifactKind(Enum):
    ONNX = "onnx"
    TARBALL = "tar.gz"


@dataclass(frozen=True)
class PublishRequest:
    """One model to publish: where its bytes are and what the event says it is."""

    bucket: str
    key: str
    kind: ArtifactKind
    model_name: str
    # The version written in a version-addressed key; the model's own metadata must agree with it.
    expected_model_version: str | None
    origin: str
    # The SageMaker training job that produced the model, when the event says so (lineage, idempotency).
    training_job: str | None = None
    # True until the model is read: its ``model_name`` metadata, when present, replaces ``model_name``.
    named_by_model: bool = False
    # The training job's ``model_name`` hyperparameter; the model's metadata must not say otherwise.
    declared_model_name: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def model_key(model_name: str, model_version: str) -> str:
    """The version-addressed key of a model in the model store (docs/contracts.md §2)."""
    return f"{MODELS_PREFIX}{model_name}/{model_version}/{MODEL_FILE_NAME}"


def component_artifact_key(component_name: str, component_version: str) -> str:
    """Where a model component version's artifact lives: the only place devices read (contracts §2)."""
    return f"{COMPONENTS_PREFIX}{component_name}/{component_version}/{MODEL_FILE_NAME}"


def is_plain_segment(value: str) -> bool:
    return _SEGMENT.match(value) is not None


def parse_event(event: object, *, model_bucket: str) -> list[PublishRequest]:
    """Parse a Lambda event into one publish request per model it announces."""
    if not isinstance(event, dict):
        raise BadEventError(f"event must be a JSON object, got {type(event).__name__}")
    if "Records" in event:
        return _parse_s3_notification(event["Records"], model_bucket=model_bucket)
    source = event.get("source")
    detail_type = event.get("detail-type")
    if source == S3_SOURCE and detail_type == S3_OBJECT_CREATED:
        return [_parse_eventbridge_s3(_field(event, "detail"), model_bucket=model_bucket)]
    if source == SAGEMAKER_SOURCE and detail_type == SAGEMAKER_TRAINING_STATE_CHANGE:
        return [_parse_training_job(_field(event, "detail"), model_bucket=model_bucket)]
    raise BadEventError(
        f"unsupported event (source={source!r}, detail-type={detail_type!r}): expected an S3 ObjectCreated "
        f"notification, an EventBridge '{S3_OBJECT_CREATED}' event "
        f"or a '{SAGEMAKER_TRAINING_STATE_CHANGE}' event"
    )


def _parse_s3_notification(records: object, *, model_bucket: str) -> list[PublishRequest]:
    if not isinstance(records, list) or not records:
        raise BadEventError("S3 notification has no Records")
    requests = []
    for index, record in enumerate(records):
        where = f"Records[{index}]"
        if not isinstance(record, dict):
            raise BadEventError(f"{where} is not an object")
        event_name = record.get("eventName")
        if record.get("eventSource") != "aws:s3" or not isinstance(event_name, str):
            raise BadEventError(f"{where} is not an S3 event (eventSource={record.get('eventSource')!r})")
        if not event_name.startswith("ObjectCreated:"):
            raise BadEventError(
                f"{where} is a {event_name!r} event; only ObjectCreated events publish a model"
            )
        s3 = _field(record, "s3", where)
        bucket = _string(_field(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
        # S3 notifications URL-encode keys ("red flower.onnx" arrives as "red+flower.onnx").
        key = unquote_plus(_string(_field(s3, "object", f"{where}.s3"), "key", f"{where}.s3.object"))
        requests.append(
            _model_object_request(bucket, key, model_bucket=model_bucket, origin=ORIGIN_S3_NOTIFICATION)
        )
    return requests


def _parse_eventbridge_s3(detail: dict[str, object], *, model_bucket: str) -> PublishRequest:
    bucket = _string(_field(detail, "bucket", "detail"), "name", "detail.bucket")
    key = _string(_field(detail, "object", "detail"), "key", "detail.object")
    return _model_object_request(bucket, key, model_bucket=model_bucket, origin=ORIGIN_EVENTBRIDGE_S3)


def _model_object_request(bucket: str, key: str, *, model_bucket: str, origin: str) -> PublishRequest:
    _check_bucket(bucket, model_bucket)
    match = _MODEL_KEY.match(key)
    if match is None:
        raise BadEventError(
            f"object key {key!r} is not a model key; expected models/<model_name>/<model_version>/model.onnx"
        )
    name, version = match["name"], match["version"]
    for label, value in (("model name", name), ("model version", version)):
        if not is_plain_segment(value):
            raise BadEventError(f"{label} {value!r} in key {key!r} must match {_SEGMENT.pattern}")
    return PublishRequest(
        bucket=bucket,
        key=key,
        kind=ArtifactKind.ONNX,
        model_name=name,
        expected_model_version=version,
        origin=origin,
    )


def _parse_training_job(detail: dict[str, object], *, model_bucket: str) -> PublishRequest:
    job_name = _string(detail, "TrainingJobName", "detail")
    status = detail.get("TrainingJobStatus")
    if status != "Completed":
        raise BadEventError(
            f"training job {job_name!r} has status {status!r}; only Completed jobs publish a model"
        )
    uri = _string(_field(detail, "ModelArtifacts", "detail"), "S3ModelArtifacts", "detail.ModelArtifacts")
    match = _S3_URI.match(uri)
    if match is None:
        raise BadEventError(f"S3ModelArtifacts {uri!r} of training job {job_name!r} is not an s3:// URI")
    bucket, key = match["bucket"], match["key"]
    _check_bucket(bucket, model_bucket)

    key_match = _MODEL_KEY.match(key)
    if key_match is not None:
        # Already version-addressed: the key names the model.
        request = _model_object_request(bucket, key, model_bucket=model_bucket, origin=ORIGIN_SAGEMAKER)
        return replace(request, training_job=job_name)
    if key.endswith(".tar.gz"):
        kind = ArtifactKind.TARBALL
    elif key.endswith("/" + MODEL_FILE_NAME):
        kind = ArtifactKind.ONNX
    else:
        raise BadEventError(
            f"S3ModelArtifacts {uri!r} of training job {job_name!r} "
            "is neither a model.tar.gz nor a model.onnx"
        )
    hyperparameters = detail.get("HyperParameters")
    declared = None
    if isinstance(hyperparameters, dict) and isinstance(hyperparameters.get(MODEL_NAME_HYPERPARAMETER), str):
        declared = hyperparameters[MODEL_NAME_HYPERPARAMETER]
    # Provisional: the model's own model_name replaces it (module docstring).
    model_name = declared if declared is not None else job_name
    if not is_plain_segment(model_name):
        raise BadEventError(
            f"model name {model_name!r} of training job {job_name!r} must match {_SEGMENT.pattern}"
        )
    return PublishRequest(
        bucket=bucket,
        key=key,
        kind=kind,
        model_name=model_name,
        expected_model_version=None,
        origin=ORIGIN_SAGEMAKER,
        training_job=job_name,
        named_by_model=True,
        declared_model_name=declared,
    )


def _check_bucket(bucket: str, model_bucket: str) -> None:
    if bucket != model_bucket:
        raise BadEventError(
            f"object is in bucket {bucket!r}; the publisher only reads the model bucket {model_bucket!r}"
        )


def _field(obj: dict[str, object], name: str, where: str = "event") -> dict[str, object]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise BadEventError(f"{where}.{name} is missing or not an object")
    return value


def _string(obj: dict[str, object], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadEventError(f"{where}.{name} is missing or not a non-empty string")
    return value
