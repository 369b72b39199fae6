"""Build the self-contained ONNX model: raw windows in, one anomaly score per window out.

Contract (docs/contracts.md section 1): input ``window`` float32 ``[batch, window_length, n_channels]``,
output ``score`` float32 ``[batch]``, normalisation inside the graph, and the model's metadata in
``metadata_props``. Internally the graph computes in float64 so that its scores equal
``training.detector.score_windows`` to float32 rounding, even when a residual is divided by a small scale.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from training.detector import ForecastResidualModel

CONTRACT_VERSION: Final = "1"
OPSET: Final = 17
# IR version 8 is the one that goes with opset 17; an older runtime on a device can still load the file.
IR_VERSION: Final = 8
INPUT_NAME: Final = "window"
OUTPUT_NAME: Final = "score"
BATCH_DIM: Final = "batch"
EDGE_POSTPROCESS_KEY: Final = "edge_postprocess"
REQUIRED_METADATA_KEYS: Final = (
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


@dataclass(frozen=True)
class ModelMetadata:
    """What goes into ``metadata_props``; ``to_props`` renders the contract's string values."""

    window_length: int
    channels: tuple[str, ...]
    threshold: float
    model_version: str
    model_name: str
    training_data_sha256: str
    training_metrics: Mapping[str, object]
    detector: str
    created_at: datetime
    # Optional: the edge's online score post-processing (JSON object, see docs/contracts.md section 1).
    edge_postprocess: Mapping[str, object] | None = None

    def to_props(self) -> dict[str, str]:
        props = {
            "contract_version": CONTRACT_VERSION,
            "window_length": str(self.window_length),
            "channels": json.dumps(list(self.channels)),
            # repr round-trips a float exactly, so the edge compares against the calibrated value.
            "threshold": repr(float(self.threshold)),
            "model_version": self.model_version,
            "model_name": self.model_name,
            "training_data_sha256": self.training_data_sha256,
            "training_metrics": json.dumps(self.training_metrics, sort_keys=True),
            "detector": self.detector,
            "created_at": format_utc(self.created_at),
        }
        if self.edge_postprocess is not None:
            props[EDGE_POSTPROCESS_KEY] = json.dumps(self.edge_postprocess, sort_keys=True)
        return props


def format_utc(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z`` suffix, e.g. ``2026-11-24T20:15:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_onnx_model(model: ForecastResidualModel, metadata: ModelMetadata) -> onnx.ModelProto:
    """The ONNX graph computing ``score_windows(model, window)`` (see ``training.detector``)."""
    if metadata.window_length != model.window_length or metadata.channels != model.channels:
        raise ValueError("metadata window_length / channels do not match the model")
    w, c = model.window_length, model.n_channels

    initializers = [
        _double("center", model.center),
        _double("scale", model.scale),
        _double("weights", model.weights),
        _double("bias", model.bias),
        _double("residual_scale", model.residual_scale),
        _double("deviation_scale", model.deviation_scale),
        _double("mean_weight", np.array(model.mean_weight)),
        _int64("past_start", [0]),
        _int64("past_end", [w - 1]),
        _int64("last_start", [w - 1]),
        _int64("last_end", [w]),
        _int64("time_axis", [1]),
        # Reshape's 0 copies the batch dimension, so a batch of 0 or 10,000 windows works alike.
        _int64("past_flat_shape", [0, (w - 1) * c]),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.DOUBLE),
        # Normalisation inside the graph: the edge feeds raw sensor values.
        helper.make_node("Sub", ["x", "center"], ["x_centred"]),
        helper.make_node("Div", ["x_centred", "scale"], ["z"]),
        helper.make_node("Slice", ["z", "past_start", "past_end", "time_axis"], ["past"]),
        helper.make_node("Slice", ["z", "last_start", "last_end", "time_axis"], ["last_3d"]),
        helper.make_node("Squeeze", ["last_3d", "time_axis"], ["last"]),
        # Forecast of the last sample from the previous window_length - 1 samples.
        helper.make_node("Reshape", ["past", "past_flat_shape"], ["past_flat"]),
        helper.make_node("MatMul", ["past_flat", "weights"], ["forecast_raw"]),
        helper.make_node("Add", ["forecast_raw", "bias"], ["forecast"]),
        helper.make_node("Sub", ["last", "forecast"], ["residual_signed"]),
        helper.make_node("Abs", ["residual_signed"], ["residual_abs"]),
        helper.make_node("Div", ["residual_abs", "residual_scale"], ["residual"]),
        # Jump of the last sample away from the mean of the previous ones.
        helper.make_node("ReduceMean", ["past"], ["level"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["last", "level"], ["deviation_signed"]),
        helper.make_node("Abs", ["deviation_signed"], ["deviation_abs"]),
        helper.make_node("Div", ["deviation_abs", "deviation_scale"], ["deviation"]),
        helper.make_node("Mul", ["deviation", "mean_weight"], ["deviation_weighted"]),
        helper.make_node("Add", ["residual", "deviation_weighted"], ["per_channel_0"]),
    ]
    per_channel = "per_channel_0"
    for index, (k, jump_scale) in enumerate(zip(model.jump_lengths, model.jump_scales, strict=True)):
        # Multi-scale level shift: mean of the last k samples against the mean of the ones before them.
        p = f"jump{index}_"
        initializers += [
            _double(p + "scale", jump_scale),
            _double(p + "weight", np.array(model.jump_weight)),
            _int64(p + "split", [w - k]),
        ]
        nodes += [
            helper.make_node("Slice", ["z", "past_start", p + "split", "time_axis"], [p + "older"]),
            helper.make_node("Slice", ["z", p + "split", "last_end", "time_axis"], [p + "recent"]),
            helper.make_node("ReduceMean", [p + "older"], [p + "older_mean"], axes=[1], keepdims=0),
            helper.make_node("ReduceMean", [p + "recent"], [p + "recent_mean"], axes=[1], keepdims=0),
            helper.make_node("Sub", [p + "recent_mean", p + "older_mean"], [p + "signed"]),
            helper.make_node("Abs", [p + "signed"], [p + "abs"]),
            helper.make_node("Div", [p + "abs", p + "scale"], [p + "scaled"]),
            helper.make_node("Mul", [p + "scaled", p + "weight"], [p + "weighted"]),
            helper.make_node("Add", [per_channel, p + "weighted"], [f"per_channel_{index + 1}"]),
        ]
        per_channel = f"per_channel_{index + 1}"
    nodes.append(helper.make_node("ReduceSum", [per_channel, "time_axis"], ["score_sum"], keepdims=0))
    score = "score_sum"
    if model.level_weight > 0:
        # Distance of the recent level from the training level, in drift-aware units; worst channel.
        initializers += [
            _double("level_center", model.level_center),
            _double("level_scale", model.level_scale),
            _double("level_weight", np.array(model.level_weight)),
            _int64("level_start", [w - model.level_length]),
        ]
        nodes += [
            helper.make_node("Slice", ["z", "level_start", "last_end", "time_axis"], ["level_rows"]),
            helper.make_node("ReduceMean", ["level_rows"], ["level_mean"], axes=[1], keepdims=0),
            helper.make_node("Sub", ["level_mean", "level_center"], ["level_signed"]),
            helper.make_node("Abs", ["level_signed"], ["level_abs"]),
            helper.make_node("Div", ["level_abs", "level_scale"], ["level_scaled"]),
            helper.make_node("ReduceMax", ["level_scaled"], ["level_max"], axes=[1], keepdims=0),
            helper.make_node("Mul", ["level_max", "level_weight"], ["level_weighted"]),
            helper.make_node("Add", ["score_sum", "level_weighted"], ["score_total"]),
        ]
        score = "score_total"
    nodes.append(helper.make_node("Cast", [score], [OUTPUT_NAME], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        f"{model.name}-w{w}-c{c}",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, w, c])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM])],
        initializer=initializers,
        doc_string="Raw sensor windows in, anomaly score per window out (higher = more anomalous).",
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="edge-anomaly-platform.training",
        model_version=0,
    )
    helper.set_model_props(proto, metadata.to_props())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save_model(proto: onnx.ModelProto, path: Path) -> str:
    """Write the model to ``path`` (one file, no external data) and return the file's sha256."""
    data = proto.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _double(name: str, values: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float64), name)


def _int64(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)
