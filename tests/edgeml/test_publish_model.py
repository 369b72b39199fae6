"""`edgeml publish model`: the key is named after the model's own model_name, as the publisher requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml import jobs
from edgeml.cli import EXIT_FAILED, EXIT_USAGE, main
from edgeml.errors import UsageError
from lambdas.publisher.core import load_and_validate, named_request
from lambdas.publisher.errors import ModelValidationError
from lambdas.publisher.events import parse_event
from tests.lambdas.publisher.onnx_models import MODEL_VERSION, build_model
from tests.lambdas.publisher.stubs import MemoryStore

BUCKET = "edgeml-dev-models"


def model_file(tmp_path: Path, model_name: str | None) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(build_model(metadata={"model_name": model_name} if model_name else None))
    return path


@pytest.mark.parametrize(
    ("metadata", "given", "name"),
    [
        ("pump", None, "pump"),  # the metadata names it
        ("pump", "pump", "pump"),  # --model-name may repeat it
        (None, "pump", "pump"),  # a model without the key: --model-name, as before
        (None, None, "anomaly-detector"),  # neither: training's default name, as before
    ],
)
def test_the_key_is_named_after_the_models_metadata(
    tmp_path: Path, metadata: str | None, given: str | None, name: str
) -> None:
    store = MemoryStore()

    uploaded = jobs.publish_model_file(
        model_file(tmp_path, metadata), model_name=given, bucket=BUCKET, store=store
    )

    key = f"models/{name}/{MODEL_VERSION}/model.onnx"
    assert uploaded["model_uri"] == f"s3://{BUCKET}/{key}"
    assert store.puts == [(BUCKET, key)]
    # The publisher takes the key as it is: the name it records is the one the model carries.
    (request,) = parse_event(jobs.object_created_event(str(uploaded["model_uri"])), model_bucket=BUCKET)
    _data, model = load_and_validate(request, store=store, max_bytes=1 << 20)
    assert named_request(request, model).model_name == name


def test_a_model_name_the_model_contradicts_is_refused_before_the_upload(tmp_path: Path) -> None:
    store = MemoryStore()
    path = model_file(tmp_path, "pump")

    with pytest.raises(UsageError) as caught:
        jobs.publish_model_file(path, model_name="anomaly-detector", bucket=BUCKET, store=store)

    assert str(caught.value) == (
        f"model {path} declares model_name 'pump', but --model-name is 'anomaly-detector'; the publisher "
        "would refuse it under that name. Leave --model-name out (or give 'pump'), or train the model with "
        "-p model_name=<name>"
    )
    assert store.puts == []


def test_a_metadata_name_that_is_no_key_segment_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    with pytest.raises(ModelValidationError, match="declares model_name 'pump/x', which cannot be an S3 key"):
        jobs.publish_model_file(model_file(tmp_path, "pump/x"), bucket=BUCKET, store=store)
    assert store.puts == []


def test_the_cli_exits_2_on_a_contradicting_model_name_and_1_on_a_bad_metadata_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both are refused before any AWS call: no endpoint is needed.
    argv = ["publish", "model", str(model_file(tmp_path, "pump")), "--bucket", BUCKET]
    assert main([*argv, "--model-name", "anomaly-detector"]) == EXIT_USAGE
    assert "declares model_name 'pump', but --model-name is 'anomaly-detector'" in capsys.readouterr().err
    assert main(["publish", "model", str(model_file(tmp_path, "pump/x")), "--bucket", BUCKET]) == EXIT_FAILED
    assert "which cannot be an S3 key segment" in capsys.readouterr().err
