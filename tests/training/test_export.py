import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.training.test_detector import hand_model
from tests.training.train_helpers import NAB_SLICE, onnx_scores, session, synthetic_channels
from training.calibrate import QuantileRule, calibrate_threshold
from training.data import load_csv, sliding_windows
from training.detector import DetectorConfig, ForecastResidualModel, fit, reference_scores, score_windows
from training.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    REQUIRED_METADATA_KEYS,
    ModelMetadata,
    build_onnx_model,
    save_model,
)

NOW = datetime(2026, 11, 24, 20, 15, tzinfo=UTC)


def metadata_for(model: ForecastResidualModel, threshold: float = 4.25) -> ModelMetadata:
    return ModelMetadata(
        window_length=model.window_length,
        channels=model.channels,
        threshold=threshold,
        model_version="20261124T201500Z-3f2a9c1d",
        model_name="pump",
        training_data_sha256="3f2a9c1d" + "0" * 56,
        training_metrics={"n_windows": 10, "calibration": {"rule": "quantile"}},
        detector=model.name,
        created_at=NOW,
    )


def export(model: ForecastResidualModel) -> onnx.ModelProto:
    return build_onnx_model(model, metadata_for(model))


@pytest.fixture(scope="module")
def nab_model() -> tuple[ForecastResidualModel, np.ndarray]:
    """Trained on the first 1,500 rows; returns all 2,500 rows' windows, including labelled anomaly ones."""
    values = load_csv(NAB_SLICE).values
    model = fit([values[:1500]], ["value"], DetectorConfig())
    return model, sliding_windows(values, model.window_length)


def test_onnx_runtime_matches_numpy_scores_on_real_nab_data(nab_model):
    model, windows = nab_model
    as_fed = windows.astype(np.float32)  # the edge feeds float32; both sides score the same inputs

    onnx_out = onnx_scores(session(export(model)), as_fed)
    numpy_out = score_windows(model, as_fed)

    assert onnx_out.dtype == np.float32
    assert onnx_out.shape == (windows.shape[0],)
    assert np.max(np.abs(onnx_out - numpy_out)) <= 1e-5
    # Scores well above the usual range are compared too (that is where float32 rounding would show).
    assert numpy_out.max() > 2 * np.quantile(numpy_out[:1469], 0.99)


def test_multichannel_model_exports_and_matches():
    values = synthetic_channels(800)
    model = fit([values[:600]], ["vibration", "pressure", "flow"], DetectorConfig(window_length=24))
    windows = sliding_windows(values, 24).astype(np.float32)

    onnx_out = onnx_scores(session(export(model)), windows)

    np.testing.assert_allclose(onnx_out, score_windows(model, windows), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [0, 1, 257])
def test_batch_dimension_is_dynamic(nab_model, batch):
    model, windows = nab_model
    sess = session(export(model))
    chunk = windows[:batch].astype(np.float32)

    out = onnx_scores(sess, chunk)

    assert out.shape == (batch,)
    np.testing.assert_allclose(out, score_windows(model, chunk), rtol=1e-6, atol=1e-5)


def test_signature_follows_the_contract(nab_model):
    model, _ = nab_model
    proto = export(model)

    (graph_input,) = proto.graph.input
    (graph_output,) = proto.graph.output
    in_type, out_type = graph_input.type.tensor_type, graph_output.type.tensor_type
    assert graph_input.name == INPUT_NAME == "window"
    assert graph_output.name == OUTPUT_NAME == "score"
    assert in_type.elem_type == out_type.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in in_type.shape.dim] == ["batch", 32, 1]
    assert [d.dim_param or d.dim_value for d in out_type.shape.dim] == ["batch"]
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    sess = session(proto)
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        ("window", "tensor(float)", ["batch", 32, 1])
    ]
    assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [("score", "tensor(float)", ["batch"])]


def test_normalisation_is_inside_the_graph():
    # Raw sensor values in, hand-computed score out: z = [0, 1, 3], residual 4, deviation 2.5 (see
    # test_detector.test_score_follows_the_documented_formula); without the centre and scales folded into the
    # graph the raw values would give otherwise.
    out = onnx_scores(
        session(export(hand_model())), np.array([[[100.0], [110.0], [130.0]], [[90.0], [90.0], [90.0]]])
    )

    # Second window: z = [-1, -1, -1]; forecast -1 -> residual 0; level -1 -> deviation 0.
    np.testing.assert_allclose(out, [5.25, 0.0], atol=1e-6)
    ops = [node.op_type for node in export(hand_model()).graph.node]
    assert ops[:2] == ["Reshape", "Sub"]


def test_graph_is_a_few_float32_nodes(nab_model):
    # Every term folded into one MatMul: per-node overhead and float64 kernels made the old graph slow.
    model, _ = nab_model
    graph = export(model).graph

    assert [node.op_type for node in graph.node] == ["Reshape", "Sub", "MatMul", "Add", "Abs", "ReduceSum"]
    assert {t.data_type for t in graph.initializer} == {TensorProto.FLOAT, TensorProto.INT64}
    weights = next(t for t in graph.initializer if t.name == "weights")
    assert list(weights.dims) == [32, 2]  # forecast residual + mean jump, one channel


def test_optional_jump_and_level_terms_export_and_match():
    values = synthetic_channels(800)
    config = DetectorConfig(
        window_length=24, jump_lengths=(4, 12), jump_weight=0.3, level_length=6, level_weight=0.7,
        level_horizon=100.0,
    )  # fmt: skip
    model = fit([values[:600]], ["vibration", "pressure", "flow"], config)
    windows = sliding_windows(values, 24).astype(np.float32)
    proto = export(model)

    onnx_out = onnx_scores(session(proto), windows)

    assert [node.op_type for node in proto.graph.node][-4:] == ["Split", "ReduceSum", "ReduceMax", "Add"]
    np.testing.assert_allclose(onnx_out, score_windows(model, windows), rtol=1e-6, atol=1e-6)
    # Folding is exact: the float32 graph is the float64 formula up to float32 rounding.
    np.testing.assert_allclose(onnx_out, reference_scores(model, windows), rtol=1e-5, atol=1e-5)
    assert not np.allclose(onnx_out, score_windows(replace(model, level_weight=0.0), windows), atol=1e-3)


def test_metadata_is_complete_and_parseable(nab_model):
    model, windows = nab_model
    scores = score_windows(model, windows[:1469])
    threshold = calibrate_threshold(scores, QuantileRule()).threshold
    proto = build_onnx_model(model, metadata_for(model, threshold=threshold))

    props = {p.key: p.value for p in proto.metadata_props}
    assert set(REQUIRED_METADATA_KEYS) <= set(props)
    assert props["contract_version"] == "1"
    assert int(props["window_length"]) == 32
    assert json.loads(props["channels"]) == ["value"]
    assert float(props["threshold"]) == threshold
    assert props["model_version"] == "20261124T201500Z-3f2a9c1d"
    assert re.fullmatch(r"[0-9a-f]{64}", props["training_data_sha256"])
    assert json.loads(props["training_metrics"]) == {"n_windows": 10, "calibration": {"rule": "quantile"}}
    assert props["detector"] == "forecast-residual"
    assert props["created_at"] == "2026-11-24T20:15:00Z"
    assert datetime.fromisoformat(props["created_at"]) == NOW
    assert all(isinstance(v, str) for v in props.values())
    # The runtime exposes the same metadata to the edge.
    assert session(proto).get_modelmeta().custom_metadata_map["threshold"] == props["threshold"]


def test_saved_file_is_self_contained(tmp_path, nab_model):
    model, windows = nab_model
    path = tmp_path / "deep" / "model.onnx"

    digest = save_model(export(model), path)

    import hashlib

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in loaded.graph.initializer)
    np.testing.assert_allclose(
        onnx_scores(session(loaded), windows[:5]),
        score_windows(model, windows[:5].astype(np.float32)),
        atol=1e-5,
    )


def test_metadata_must_match_the_model():
    model = hand_model()
    wrong = metadata_for(fit([synthetic_channels(100)[:, :1]], ["v"], DetectorConfig(window_length=4)))

    with pytest.raises(ValueError, match="metadata window_length / channels do not match the model"):
        build_onnx_model(model, wrong)
