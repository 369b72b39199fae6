from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import ModelError
from greengrass_components.anomaly_detector.model import ModelLoader, load_model

from .conftest import ModelFactory


def test_valid_model_loads_with_typed_metadata_and_scores(model_path: Path) -> None:
    model = load_model(model_path, expected_sha256=hashlib.sha256(model_path.read_bytes()).hexdigest())

    assert model.metadata.window_length == 8
    assert model.metadata.channels == ("value",)
    assert model.metadata.threshold == 3.0
    assert model.metadata.training_metrics == {"n_windows": 100}
    windows = np.zeros((2, 8, 1), dtype=np.float32)
    windows[1, -1, 0] = 8.0  # mean 1, last 8 -> |8 - 1| / 1
    assert model.score(windows).tolist() == [0.0, 7.0]


def test_sha256_is_case_insensitive(model_path: Path) -> None:
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest().upper()
    assert load_model(model_path, expected_sha256=digest).sha256 == digest.lower()


def test_refuses_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match=r"onnxruntime cannot load model .*model\.onnx"):
        load_model(path)


def test_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read model file"):
        load_model(tmp_path / "absent.onnx")


def test_refuses_sha256_mismatch(model_path: Path) -> None:
    with pytest.raises(ModelError, match=f"sha256 mismatch .*expected {'a' * 64}, got [0-9a-f]{{64}}"):
        load_model(model_path, expected_sha256="a" * 64)


def test_refuses_shape_that_does_not_match_metadata(make_model: ModelFactory) -> None:
    path = make_model(input_shape=["batch", 16, 1])  # metadata still says window_length 8
    with pytest.raises(
        ModelError, match=r"input shape \['batch', 16, 1\] does not match metadata window_length=8"
    ):
        load_model(path)


def test_refuses_channel_count_mismatch(make_model: ModelFactory) -> None:
    path = make_model(input_shape=["batch", 8, 2])
    with pytest.raises(ModelError, match="and 1 channels"):
        load_model(path)


def test_refuses_fixed_batch_dimension(make_model: ModelFactory) -> None:
    with pytest.raises(ModelError, match="batch dimension must be dynamic, got fixed size 4"):
        load_model(make_model(input_shape=[4, 8, 1]))


@pytest.mark.parametrize("key", ["threshold", "channels", "training_data_sha256", "created_at"])
def test_refuses_missing_metadata(make_model: ModelFactory, key: str) -> None:
    with pytest.raises(ModelError, match=f"metadata is missing required keys: {key}$"):
        load_model(make_model(drop_keys=[key]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"threshold": "high"}, "threshold is not a float: 'high'"),
        ({"threshold": "nan"}, "threshold must be finite"),
        ({"contract_version": "2"}, "unsupported contract_version '2'"),
        ({"window_length": "eight"}, "window_length is not an integer"),
        ({"channels": "value"}, "channels is not a JSON list"),
        ({"channels": '["a", "a"]'}, "unique names"),
        ({"training_metrics": "[1]"}, "training_metrics must be a JSON object"),
        ({"created_at": "yesterday"}, "created_at is not ISO-8601"),
    ],
)
def test_refuses_bad_metadata_values(
    make_model: ModelFactory, override: dict[str, str], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        load_model(make_model(metadata=override))


def test_refuses_wrong_input_name(make_model: ModelFactory) -> None:
    with pytest.raises(ModelError, match="exactly one input named 'window', got \\['x'\\]"):
        load_model(make_model(input_name="x"))


def test_refuses_wrong_output_name(make_model: ModelFactory) -> None:
    with pytest.raises(ModelError, match="no output named 'score', got \\['anomaly'\\]"):
        load_model(make_model(output_name="anomaly"))


def test_refuses_output_of_wrong_rank(make_model: ModelFactory) -> None:
    with pytest.raises(ModelError, match=r"output 'score' must have rank 1 \[batch\]"):
        load_model(make_model(output_rank2=True))


def test_refuses_model_whose_probe_is_not_finite(make_model: ModelFactory) -> None:
    # scale 0 makes 0/0 = NaN on the all-zero probe window.
    with pytest.raises(ModelError, match="probe inference returned non-finite scores"):
        load_model(make_model(scale=0.0))


def test_loader_creates_one_session_per_model(model_path: Path) -> None:
    model = ModelLoader().load(model_path)
    session = model.session
    model.score(np.zeros((5, 8, 1), dtype=np.float32))
    assert model.session is session
