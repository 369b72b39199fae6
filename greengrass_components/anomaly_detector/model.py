"""Load an ONNX model file and check it against the model contract (contracts §1) before it is used.

One ``onnxruntime.InferenceSession`` per model, created here and reused for every micro-batch. A model
that fails any check is refused with a :class:`ModelError` that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from .errors import ModelError
from .postprocess import METADATA_KEY as POSTPROCESS_KEY
from .postprocess import PostprocessConfig

CONTRACT_VERSION = "1"
INPUT_NAME = "window"
OUTPUT_NAME = "score"
FLOAT_TENSOR = "tensor(float)"
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
PROBE_BATCH = 2


class Session(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the scorer uses (lets tests count calls)."""

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any], run_options: Any = None
    ) -> list[Any]: ...


@dataclass(frozen=True)
class ModelMetadata:
    contract_version: str
    window_length: int
    channels: tuple[str, ...]
    threshold: float
    model_version: str
    training_data_sha256: str
    training_metrics: Mapping[str, Any]
    detector: str
    created_at: str


@dataclass(frozen=True)
class LoadedModel:
    """A validated model: its session, its contract metadata, and where it came from."""

    session: Session
    metadata: ModelMetadata
    path: Path
    sha256: str
    extra_metadata: Mapping[str, str] = field(default_factory=dict)

    def score(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """Score a batch ``[batch, window_length, n_channels]`` with ONE ``session.run``."""
        (scores,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: windows})
        return np.asarray(scores, dtype=np.float32).reshape(-1)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_metadata(props: Mapping[str, str]) -> ModelMetadata:
    """Check and type the contract's ``metadata_props``."""
    missing = [key for key in REQUIRED_METADATA if key not in props]
    if missing:
        raise ModelError(f"model metadata is missing required keys: {', '.join(missing)}")
    if props["contract_version"] != CONTRACT_VERSION:
        raise ModelError(
            f"unsupported contract_version {props['contract_version']!r}, expected {CONTRACT_VERSION!r}"
        )
    try:
        window_length = int(props["window_length"])
    except ValueError:
        raise ModelError(f"window_length is not an integer: {props['window_length']!r}") from None
    if window_length < 1:
        raise ModelError(f"window_length must be >= 1, got {window_length}")
    try:
        channels = json.loads(props["channels"])
    except json.JSONDecodeError:
        raise ModelError(f"channels is not a JSON list: {props['channels']!r}") from None
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c for c in channels)
        or len(set(channels)) != len(channels)
    ):
        raise ModelError(f"channels must be a non-empty JSON list of unique names: {props['channels']!r}")
    try:
        threshold = float(props["threshold"])
    except ValueError:
        raise ModelError(f"threshold is not a float: {props['threshold']!r}") from None
    if not math.isfinite(threshold):
        raise ModelError(f"threshold must be finite, got {props['threshold']!r}")
    try:
        metrics = json.loads(props["training_metrics"])
    except json.JSONDecodeError:
        raise ModelError("training_metrics is not JSON") from None
    if not isinstance(metrics, dict):
        raise ModelError("training_metrics must be a JSON object")
    try:
        datetime.fromisoformat(props["created_at"])
    except ValueError:
        raise ModelError(f"created_at is not ISO-8601: {props['created_at']!r}") from None
    if not props["model_version"]:
        raise ModelError("model_version must not be empty")
    return ModelMetadata(
        contract_version=props["contract_version"],
        window_length=window_length,
        channels=tuple(channels),
        threshold=threshold,
        model_version=props["model_version"],
        training_data_sha256=props["training_data_sha256"],
        training_metrics=metrics,
        detector=props["detector"],
        created_at=props["created_at"],
    )


def _check_signature(session: ort.InferenceSession, meta: ModelMetadata) -> None:
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelError(
            f"model must have exactly one input named {INPUT_NAME!r}, got {[i.name for i in inputs]}"
        )
    spec = inputs[0]
    if spec.type != FLOAT_TENSOR:
        raise ModelError(f"input {INPUT_NAME!r} must be float32 ({FLOAT_TENSOR}), got {spec.type}")
    shape = list(spec.shape)
    if len(shape) != 3:
        raise ModelError(
            f"input {INPUT_NAME!r} must have rank 3 [batch, window, channels], got shape {shape}"
        )
    if isinstance(shape[0], int):
        raise ModelError(f"input batch dimension must be dynamic, got fixed size {shape[0]}")
    expected = [meta.window_length, len(meta.channels)]
    if shape[1:] != expected:
        raise ModelError(
            f"input shape {shape} does not match metadata window_length={meta.window_length} "
            f"and {len(meta.channels)} channels (expected [batch, {expected[0]}, {expected[1]}])"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    if OUTPUT_NAME not in outputs:
        raise ModelError(f"model has no output named {OUTPUT_NAME!r}, got {sorted(outputs)}")
    out = outputs[OUTPUT_NAME]
    if out.type != FLOAT_TENSOR:
        raise ModelError(f"output {OUTPUT_NAME!r} must be float32 ({FLOAT_TENSOR}), got {out.type}")
    if len(out.shape) != 1:
        raise ModelError(f"output {OUTPUT_NAME!r} must have rank 1 [batch], got shape {list(out.shape)}")


class ModelLoader:
    """Builds validated :class:`LoadedModel` objects; one session per model file."""

    def __init__(
        self, *, intra_op_threads: int = 1, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> None:
        # One thread by default: edge CPUs are small and shared with the rest of the device.
        self._intra_op_threads = intra_op_threads
        self._providers = list(providers)

    def load(self, path: Path | str, expected_sha256: str | None = None) -> LoadedModel:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
        # Hash the same bytes the session is built from, so what was checked is what runs.
        digest = sha256_hex(data)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise ModelError(f"model sha256 mismatch for {path}: expected {expected_sha256}, got {digest}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        # Our models are tiny: the CPU arena only keeps freed batch buffers resident (RSS) and measured
        # no faster on batches of 64-2048 windows (docs/benchmarks.md).
        options.enable_cpu_mem_arena = False
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=self._providers)
        # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) derive from Exception directly.
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load model {path}: {exc}") from exc
        props = dict(session.get_modelmeta().custom_metadata_map)
        meta = parse_metadata(props)
        if POSTPROCESS_KEY in props:
            # Refused here, at load, so a bad value never replaces a running model (ModelError says why).
            PostprocessConfig.from_json(props[POSTPROCESS_KEY])
        _check_signature(session, meta)
        model = LoadedModel(
            session=session,
            metadata=meta,
            path=path,
            sha256=digest,
            extra_metadata={k: v for k, v in props.items() if k not in REQUIRED_METADATA},
        )
        _probe(model)
        return model


def _probe(model: LoadedModel) -> None:
    """Run the model once on zeros: a graph that cannot run or gives junk is refused before use."""
    meta = model.metadata
    probe = np.zeros((PROBE_BATCH, meta.window_length, len(meta.channels)), dtype=np.float32)
    try:
        (raw,) = model.session.run([OUTPUT_NAME], {INPUT_NAME: probe})
    except Exception as exc:  # onnxruntime runtime errors are plain Exception subclasses
        raise ModelError(f"probe inference failed: {exc}") from exc
    scores = np.asarray(raw)
    if scores.shape != (PROBE_BATCH,):
        raise ModelError(f"probe inference returned shape {scores.shape}, expected ({PROBE_BATCH},)")
    if not np.all(np.isfinite(scores)):
        raise ModelError(f"probe inference returned non-finite scores: {scores.tolist()}")


def load_model(path: Path | str, expected_sha256: str | None = None) -> LoadedModel:
    return ModelLoader().load(path, expected_sha256)
