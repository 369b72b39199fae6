"""Build the self-contained ONNX model: raw windows in, one anomaly score per window out.

Contract (docs/contracts.md section 1): input ``window`` float32 ``[batch, window_length, n_channels]``,
output ``score`` float32 ``[batch]``, normalisation inside the graph, and the model's metadata in
``metadata_props``. The graph computes in float32, every score term folded into one matrix
(``training.detector.linear_form``); ``training.detector.score_windows`` is its numpy twin.
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

from training.detector import ForecastResidualModel, linear_form

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
    """The ONNX graph computing ``score_windows(model, window)`` (see ``training.detector``).

    Six float32 nodes (eight with the level term): Reshape, Sub (centre), MatMul + Add (every term's
    linear part, ``linear_form``), Abs, ReduceSum. Why so few: ONNX Runtime costs about 0.5 us per node per
    call and its float64 and broadcasting elementwise kernels are slow; the float64 graph of ~20 nodes this
    replaces cost 0.6 us per window at batch 512 and 8 us per single-window call (docs/benchmarks.md).
    """
    if metadata.window_length != model.window_length or metadata.channels != model.channels:
        raise ValueError("metadata window_length / channels do not match the model")
    w, c = model.window_length, model.n_channels
    form = linear_form(model)
    n_terms = form.weights.shape[1]

    initializers = [
        numpy_helper.from_array(form.center, "center"),
        numpy_helper.from_array(form.weights, "weights"),
        numpy_helper.from_array(form.bias, "bias"),
        # Reshape's 0 copies the batch dimension, so a batch of 0 or 10,000 windows works alike.
        _int64("flat_shape", [0, w * c]),
        _int64("term_axis", [1]),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "flat_shape"], ["x"]),
        # Normalisation inside the graph: the edge feeds raw sensor values. Centre first, on the flat
        # [batch, w * c] tensor: broadcasting a [c] vector over [batch, w, c] is ~10x slower in ORT.
        helper.make_node("Sub", ["x", "center"], ["x_centred"]),
        helper.make_node("MatMul", ["x_centred", "weights"], ["terms_linear"]),
        helper.make_node("Add", ["terms_linear", "bias"], ["terms_signed"]),
        helper.make_node("Abs", ["terms_signed"], ["terms"]),
    ]
    if form.n_summed == n_terms:
        nodes.append(helper.make_node("ReduceSum", ["terms", "term_axis"], [OUTPUT_NAME], keepdims=0))
    else:
        # Level terms (one per channel, after the summed ones): the worst channel counts.
        initializers.append(_int64("term_split", [form.n_summed, n_terms - form.n_summed]))
        nodes += [
            helper.make_node("Split", ["terms", "term_split"], ["summed", "level"], axis=1),
            helper.make_node("ReduceSum", ["summed", "term_axis"], ["score_sum"], keepdims=0),
            helper.make_node("ReduceMax", ["level"], ["level_max"], axes=[1], keepdims=0),
            helper.make_node("Add", ["score_sum", "level_max"], [OUTPUT_NAME]),
        ]
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


def _int64(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)
