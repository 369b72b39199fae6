"""Small real ONNX models for the publisher's tests, built with onnx's helper API.

The good model follows docs/contracts.md §1: input ``window`` float32 [batch, window, channels],
normalisation inside the graph, output ``score`` float32 [batch] (mean absolute z-score of the window).
Keyword arguments break one thing at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL_VERSION = "20261124T201500Z-3f2a9c1d"


def contract_metadata(*, window_length: int = 8, channels: Iterable[str] = ("value",)) -> dict[str, str]:
    return {
        "contract_version": "1",
        "window_length": str(window_length),
        "channels": json.dumps(list(channels)),
        "threshold": "1.5",
        "model_version": MODEL_VERSION,
        "training_data_sha256": "ab" * 32,
        "training_metrics": json.dumps({"n_windows": 100, "score_p99": 1.2}),
        "detector": "zscore-test",
        "created_at": "2026-11-24T20:15:00Z",
    }


def build_model(
    *,
    window_length: int = 8,
    channels: tuple[str, ...] = ("value",),
    metadata: Mapping[str, str] | None = None,
    drop_metadata: Iterable[str] = (),
    input_name: str = "window",
    output_name: str = "score",
    spread: float = 2.0,
) -> bytes:
    """Serialised ONNX bytes; ``spread=0`` makes the normalisation divide by zero (non-finite scores)."""
    n_channels = len(channels)
    mean = numpy_helper.from_array(np.full((n_channels,), 10.0, dtype=np.float32), "mean")
    std = numpy_helper.from_array(np.full((n_channels,), spread, dtype=np.float32), "std")
    nodes = [
        helper.make_node("Sub", [input_name, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
        helper.make_node("Abs", ["z"], ["abs_z"]),
        helper.make_node("ReduceMean", ["abs_z"], [output_name], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "zscore",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", window_length, n_channels])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch"])],
        initializer=[mean, std],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {**contract_metadata(window_length=window_length, channels=channels), **(metadata or {})}
    for key in drop_metadata:
        props.pop(key)
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
