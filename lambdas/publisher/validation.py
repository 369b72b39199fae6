"""Check a model file against the model contract (docs/contracts.md §1) before anything is published.

The checks mirror what the edge does at load time, so a model the edge would refuse never reaches a
device: all metadata keys present and well-formed, ``edge_postprocess`` (when present) accepted by the
component's own parser, input ``window`` float32 ``[batch, window, channels]``, output ``score`` float32
``[batch]``, and a probe inference that returns one finite score per window.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from greengrass_components.anomaly_detector.errors import ModelError as EdgeModelError
from greengrass_components.anomaly_detector.postprocess import METADATA_KEY as POSTPROCESS_KEY
from greengrass_components.anomaly_detector.postprocess import PostprocessConfig
from lambdas.publisher.errors import ModelValidationError
from lambdas.publisher.events import MODEL_FILE_NAME, is_plain_segment

CONTRACT_VERSION = "1"
REQUIRED_METADATA = (
    "contract_version",
    "window_length",
    "channels",
    "threshold",
    "model_version",
    "training_data_sha256",
    "training_metrics",
    "detector",
    "created_at",
)
INPUT_NAME = "window"
OUTPUT_NAME = "score"
_FLOAT_TENSOR = "tensor(float)"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# SageMaker's model.tar.gz holds the model directory; a stray huge archive must not keep the Lambda busy.
_MAX_ARCHIVE_MEMBERS = 1000
_PROBE_BATCH = 2

_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelInfo:
    """What the publisher learned from a model that passed validation."""

    sha256: str
    size_bytes: int
    model_version: str
    window_length: int
    channels: tuple[str, ...]
    threshold: float
    detector: str
    training_data_sha256: str
    created_at: str
    # What training measured (docs/contracts.md §1); the lifecycle gate reads its floors from here.
    training_metrics: Mapping[str, object] = field(default_factory=dict)
    # The optional ``model_name`` key (training writes it); unchecked here, as the contract does not
    # require it: ``core.named_request`` checks it where it names the model.
    model_name: str | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_model_from_archive(archive: bytes, *, max_bytes: int) -> bytes:
    """Read ``model.onnx`` from the top level of a SageMaker ``model.tar.gz`` without touching disk."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > _MAX_ARCHIVE_MEMBERS:
                    break
                if not member.isfile() or PurePosixPath(member.name) != PurePosixPath(MODEL_FILE_NAME):
                    continue
                if member.size > max_bytes:
                    raise ModelValidationError(
                        f"{MODEL_FILE_NAME} in the archive is {member.size} bytes; the limit is {max_bytes}"
                    )
                extracted = tar.extractfile(member)
                if extracted is None:
                    break
                return extracted.read()
    except tarfile.TarError as exc:
        raise ModelValidationError(f"model archive is not a readable tar.gz: {exc}") from exc
    raise ModelValidationError(f"model archive has no top-level {MODEL_FILE_NAME}")


def validate_model(data: bytes, *, max_bytes: int) -> ModelInfo:
    """Validate model bytes against the contract; raise ``ModelValidationError`` naming the first fault."""
    if not data:
        raise ModelValidationError("model file is empty")
    if len(data) > max_bytes:
        raise ModelValidationError(f"model file is {len(data)} bytes; the limit is {max_bytes}")
    session = _load_session(data)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    info = _check_metadata(metadata, sha256=sha256_hex(data), size_bytes=len(data))
    _check_postprocess(metadata)
    _check_signature(session, info)
    _probe(session, info)
    return info


def _load_session(data: bytes) -> Any:
    options = ort.SessionOptions()
    # One probe inference needs no thread pool, and the Lambda may have a fraction of a vCPU.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        # onnxruntime's load errors (InvalidProtobuf, InvalidGraph, Fail, ...) share no base class but
        # Exception; any of them means these bytes are not a model we can run.
        raise ModelValidationError(f"model file is not a loadable ONNX model: {exc}") from exc


def _check_metadata(metadata: dict[str, str], *, sha256: str, size_bytes: int) -> ModelInfo:
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelValidationError(f"model metadata_props is missing required keys: {', '.join(missing)}")
    if metadata["contract_version"] != CONTRACT_VERSION:
        raise ModelValidationError(
            f"model contract_version is {metadata['contract_version']!r}; "
            f"this publisher accepts {CONTRACT_VERSION!r}"
        )
    window_length = _parse(metadata, "window_length", int)
    if window_length < 1:
        raise ModelValidationError(f"model window_length must be >= 1, got {window_length}")
    channels = _parse(metadata, "channels", json.loads)
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(name, str) and name for name in channels)
        or len(set(channels)) != len(channels)
    ):
        raise ModelValidationError(
            f"model channels must be a JSON list of distinct non-empty names, got {metadata['channels']!r}"
        )
    threshold = _parse(metadata, "threshold", float)
    if not math.isfinite(threshold):
        raise ModelValidationError(f"model threshold must be finite, got {metadata['threshold']!r}")
    model_version = metadata["model_version"]
    if not is_plain_segment(model_version):
        raise ModelValidationError(
            f"model_version {model_version!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "(it becomes an S3 key segment)"
        )
    if not _SHA256_HEX.match(metadata["training_data_sha256"]):
        raise ModelValidationError("model training_data_sha256 must be 64 lowercase hex digits")
    metrics = _parse(metadata, "training_metrics", json.loads)
    if not isinstance(metrics, dict):
        raise ModelValidationError("model training_metrics must be a JSON object")
    if not metadata["detector"].strip():
        raise ModelValidationError("model detector must be a non-empty name")
    created_at = _parse(metadata, "created_at", datetime.fromisoformat)
    if created_at.utcoffset() != timedelta(0):
        raise ModelValidationError(
            f"model created_at must be an ISO-8601 UTC time, got {metadata['created_at']!r}"
        )
    return ModelInfo(
        sha256=sha256,
        size_bytes=size_bytes,
        model_version=model_version,
        window_length=window_length,
        channels=tuple(channels),
        threshold=threshold,
        detector=metadata["detector"],
        training_data_sha256=metadata["training_data_sha256"],
        created_at=metadata["created_at"],
        training_metrics=metrics,
        model_name=metadata.get("model_name") or None,
    )


def _check_postprocess(metadata: dict[str, str]) -> None:
    """The inference component's own parser (shipped in this image): what it refuses, devices refuse.

    Without this, a model whose ``edge_postprocess`` the component refuses (a typo, a value out of range,
    a key newer than the component) would pass here, be deployed, and be rejected by every device while
    the last good model keeps running: a rollout that changes nothing and says so only in heartbeats.
    """
    if POSTPROCESS_KEY not in metadata:
        return
    try:
        PostprocessConfig.from_json(metadata[POSTPROCESS_KEY])
    except EdgeModelError as exc:
        raise ModelValidationError(f"the inference component would refuse this model: {exc}") from exc


def _parse(metadata: dict[str, str], key: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(metadata[key])
    except ValueError as exc:
        raise ModelValidationError(f"model metadata {key}={metadata[key]!r} is malformed: {exc}") from exc


def _check_signature(session: Any, info: ModelInfo) -> None:
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [node.name for node in inputs]
        raise ModelValidationError(f"model must have exactly one input named {INPUT_NAME!r}, got {names}")
    window = inputs[0]
    if window.type != _FLOAT_TENSOR or len(window.shape) != 3:
        raise ModelValidationError(
            f"model input {INPUT_NAME!r} must be float32 [batch, window_length, n_channels], "
            f"got {window.type} {window.shape}"
        )
    for axis, expected in ((1, info.window_length), (2, len(info.channels))):
        dim = window.shape[axis]
        # A symbolic dimension is accepted; a fixed one must agree with the metadata.
        if isinstance(dim, int) and dim != expected:
            raise ModelValidationError(
                f"model input {INPUT_NAME!r} dimension {axis} is {dim}; metadata says {expected}"
            )
    outputs = {node.name: node for node in session.get_outputs()}
    score = outputs.get(OUTPUT_NAME)
    if score is None:
        raise ModelValidationError(f"model must have an output named {OUTPUT_NAME!r}, got {sorted(outputs)}")
    if score.type != _FLOAT_TENSOR or len(score.shape) != 1:
        raise ModelValidationError(
            f"model output {OUTPUT_NAME!r} must be float32 [batch], got {score.type} {score.shape}"
        )


def _probe(session: Any, info: ModelInfo) -> None:
    # Deterministic, non-constant input: a constant window can hide a division by a zero spread.
    rng = np.random.default_rng(0)
    window = rng.normal(size=(_PROBE_BATCH, info.window_length, len(info.channels))).astype(np.float32)
    try:
        (scores,) = session.run([OUTPUT_NAME], {INPUT_NAME: window})
    except Exception as exc:
        # Same reason as at load: onnxruntime's runtime errors have no narrower common base.
        raise ModelValidationError(f"model probe inference failed: {exc}") from exc
    scores = np.asarray(scores)
    if scores.dtype != np.float32 or scores.shape != (_PROBE_BATCH,):
        raise ModelValidationError(
            f"model probe returned {scores.dtype} {scores.shape}; expected float32 ({_PROBE_BATCH},)"
        )
    if not np.all(np.isfinite(scores)):
        raise ModelValidationError("model probe returned non-finite scores")
