from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from greengrass_components.anomaly_detector.errors import ModelError as EdgeModelError
from greengrass_components.anomaly_detector.model import ModelLoader
from lambdas.publisher.errors import ModelValidationError
from lambdas.publisher.validation import REQUIRED_METADATA, extract_model_from_archive, validate_model
from tests.lambdas.publisher.onnx_models import MODEL_VERSION, build_model
from training.evaluate import NAB_POSTPROCESS

LIMIT = 1_000_000


def tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_contract_model_is_accepted_and_described():
    data = build_model(window_length=16, channels=("temp", "vibration"))
    info = validate_model(data, max_bytes=LIMIT)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert info.model_version == MODEL_VERSION
    assert (info.window_length, info.channels, info.threshold) == (16, ("temp", "vibration"), 1.5)
    assert info.detector == "zscore-test"


def test_garbage_bytes_are_refused():
    with pytest.raises(ModelValidationError, match="model file is not a loadable ONNX model"):
        validate_model(b"definitely not protobuf", max_bytes=LIMIT)


def test_empty_and_oversized_files_are_refused():
    with pytest.raises(ModelValidationError, match="model file is empty"):
        validate_model(b"", max_bytes=LIMIT)
    data = build_model()
    with pytest.raises(ModelValidationError, match=f"model file is {len(data)} bytes; the limit is 100"):
        validate_model(data, max_bytes=100)


@pytest.mark.parametrize("key", REQUIRED_METADATA)
def test_each_missing_metadata_key_is_named(key):
    with pytest.raises(ModelValidationError, match=f"missing required keys: {key}$"):
        validate_model(build_model(drop_metadata=[key]), max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"contract_version": "2"}, "contract_version is '2'; this publisher accepts '1'"),
        ({"window_length": "eight"}, "window_length='eight' is malformed"),
        ({"channels": '"value"'}, "channels must be a JSON list of distinct non-empty names"),
        ({"channels": '["value", "value"]'}, "channels must be a JSON list of distinct non-empty names"),
        ({"threshold": "nan"}, "threshold must be finite"),
        ({"model_version": "v1/../../x"}, "model_version 'v1/../../x' must be 1-128 letters"),
        ({"training_data_sha256": "abc"}, "training_data_sha256 must be 64 lowercase hex digits"),
        ({"training_metrics": "[1, 2]"}, "training_metrics must be a JSON object"),
        ({"created_at": "yesterday"}, "created_at='yesterday' is malformed"),
        ({"created_at": "2026-11-24T20:15:00"}, "created_at must be an ISO-8601 UTC time"),
    ],
)
def test_malformed_metadata_is_refused(metadata, message):
    with pytest.raises(ModelValidationError) as caught:
        validate_model(build_model(metadata=metadata), max_bytes=LIMIT)
    assert message in str(caught.value)


def test_wrong_input_name_is_refused():
    with pytest.raises(ModelValidationError, match=r"exactly one input named 'window', got \['x'\]"):
        validate_model(build_model(input_name="x"), max_bytes=LIMIT)


def test_wrong_output_name_is_refused():
    with pytest.raises(ModelValidationError, match=r"must have an output named 'score', got \['anomaly'\]"):
        validate_model(build_model(output_name="anomaly"), max_bytes=LIMIT)


def test_input_shape_must_agree_with_metadata():
    data = build_model(window_length=8, metadata={"window_length": "16"})
    with pytest.raises(ModelValidationError, match="dimension 1 is 8; metadata says 16"):
        validate_model(data, max_bytes=LIMIT)


def test_probe_with_non_finite_scores_is_refused():
    with pytest.raises(ModelValidationError, match="probe returned non-finite scores"):
        validate_model(build_model(spread=0.0), max_bytes=LIMIT)


def test_model_is_read_from_a_sagemaker_tarball():
    data = build_model()
    archive = tarball({"code/inference.py": b"print()", "./model.onnx": data})
    assert extract_model_from_archive(archive, max_bytes=LIMIT) == data


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (tarball({"nested/model.onnx": b"x"}), "model archive has no top-level model.onnx"),
        (b"not a tarball", "model archive is not a readable tar.gz"),
        (tarball({"model.onnx": b"x" * 200}), "model.onnx in the archive is 200 bytes; the limit is 100"),
    ],
)
def test_unusable_tarballs_are_refused(archive, message):
    with pytest.raises(ModelValidationError) as caught:
        extract_model_from_archive(archive, max_bytes=100)
    assert message in str(caught.value)


# What the inference component's parser accepts and refuses (greengrass_components/.../postprocess.py).
POSTPROCESS_CASES = [
    ('{"method": "likelihood"}', None),
    (json.dumps(dict(NAB_POSTPROCESS)), None),
    ('{"method": "ratio", "short_window": 18, "hold_rows": 18}', None),
    ('{"method": "likelihood", "short_windw": 10}', "has unknown keys"),
    ("not json", "is not JSON"),
    ('["likelihood"]', "must be a JSON object"),
    ('{"method": "median"}', "method must be one of"),
    ('{"method": "likelihood", "short_window": 0}', "short_window must be >= 1"),
    ('{"method": "likelihood", "suppress_rearm_ratio": 1.0}', "suppress_rearm_ratio"),
    # Refused, not a crash: an integer too large for a float, too many digits, too deeply nested.
    ('{"min_std": 1' + "0" * 400 + "}", "min_std is too large for a float"),
    ('{"min_std": ' + "9" * 5000 + "}", "is not JSON"),
    ("[" * 100_000, "is not JSON"),
]


@pytest.mark.parametrize(("text", "refusal"), POSTPROCESS_CASES)
def test_edge_postprocess_is_checked_by_the_component_parser(text, refusal):
    data = build_model(metadata={"edge_postprocess": text})
    if refusal is None:
        assert validate_model(data, max_bytes=LIMIT).model_version == MODEL_VERSION
        return
    with pytest.raises(ModelValidationError) as caught:
        validate_model(data, max_bytes=LIMIT)
    assert "the inference component would refuse this model" in str(caught.value)
    assert refusal in str(caught.value)


@pytest.mark.parametrize(("text", "refusal"), POSTPROCESS_CASES)
def test_publisher_and_component_agree_on_edge_postprocess(tmp_path, text, refusal):
    """The device's own loader decides the same: a model the publisher passes, every device loads."""
    path = tmp_path / "model.onnx"
    path.write_bytes(build_model(metadata={"edge_postprocess": text}))
    if refusal is None:
        assert ModelLoader().load(path).metadata.model_version == MODEL_VERSION
    else:
        with pytest.raises(EdgeModelError, match=refusal):
            ModelLoader().load(path)
