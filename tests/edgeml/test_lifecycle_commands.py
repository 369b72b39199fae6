"""deploy / fleet / promote / rollback / publish against a moto server and the Greengrass fake over HTTP.

The CLI gets nothing injected: it builds its clients from the environment and the endpoint flags, as in
an operator's shell. The devices' reports come from the fake's device API (tests/lambdas/lifecycle).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from edgeml.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from tests.edgeml.stand_ins import ServerPlane
from tests.lambdas.lifecycle.helpers import (
    BUCKET,
    CANARY,
    CANARY_THINGS,
    FLEET,
    MODEL_COMPONENT,
    model_bytes,
    training_metrics,
)
from tests.lambdas.publisher.onnx_models import build_model

V1 = "20261124T200000Z-00000001"
V2 = "20261125T200000Z-00000002"


def run(plane: ServerPlane, *argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main([*plane.endpoint_args(), "--json", *argv], out=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def model_file(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"{version}.onnx"
    path.write_bytes(model_bytes(version))
    return path


def test_deploy_then_promote_after_the_canary_is_healthy(plane: ServerPlane, tmp_path):
    code, deployed = run(plane, "deploy", str(model_file(tmp_path, V1)), "--model-name", "pump")
    assert code == EXIT_OK
    assert deployed["outcome"] == "published"
    assert deployed["model"]["model_uri"] == f"s3://{BUCKET}/models/pump/{V1}/model.onnx"
    # The model goes to the canary from its released copy under components/, the prefix devices read.
    assert (
        deployed["publish"]["artifact_uri"] == f"s3://{BUCKET}/components/{MODEL_COMPONENT}/1.0.0/model.onnx"
    )
    recipe = json.loads(
        plane.plane.gg.get_component(arn=deployed["publish"]["component_arn"], recipeOutputFormat="JSON")[
            "recipe"
        ]
    )
    assert [a["URI"] for a in recipe["Manifests"][0]["Artifacts"]] == [deployed["publish"]["artifact_uri"]]
    canary = plane.plane.latest_deployment(CANARY)
    assert deployed["deployment_id"] == canary["deploymentId"]
    assert canary["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"

    code, status = run(plane, "fleet")
    assert code == EXIT_OK
    assert status["canary"]["model"]["model_version"] == V1
    assert status["fleet"]["deployment"] is None

    code, refused = run(plane, "promote")
    assert code == EXIT_FAILED
    assert "canary edgeml-canary is pending" in str(refused["refused"])

    plane.plane.report(CANARY_THINGS, str(deployed["deployment_id"]))
    code, promoted = run(plane, "promote", "--model-version", V1)
    assert code == EXIT_OK
    assert promoted["outcome"] == "promoted"
    assert promoted["deployment_id"] == plane.plane.latest_deployment(FLEET)["deploymentId"]

    code, where = run(plane, "fleet", "--group", "canary")
    assert code == EXIT_OK
    assert [d["thing_name"] for d in where["devices"]] == list(CANARY_THINGS)
    assert "AWS_ENDPOINT_URL" not in os.environ  # the flags applied to the run only


def test_publish_model_is_idempotent_and_rollback_restores_the_previous_model(plane: ServerPlane, tmp_path):
    first = model_file(tmp_path, V1)
    code, uploaded = run(plane, "publish", "model", str(first), "--model-name", "pump")
    assert code == EXIT_OK
    assert uploaded["created"] is True
    assert uploaded["model_uri"] == f"s3://{BUCKET}/models/pump/{V1}/model.onnx"
    code, again = run(plane, "publish", "model", str(first), "--model-name", "pump")
    assert (code, again["created"]) == (EXIT_OK, False)

    assert run(plane, "deploy", "--model-uri", str(uploaded["model_uri"]))[0] == EXIT_OK
    assert run(plane, "deploy", str(model_file(tmp_path, V2)), "--model-name", "pump")[0] == EXIT_OK
    code, lineage = run(plane, "fleet", "--model-version", V2)
    assert code == EXIT_OK
    assert lineage["model"]["component_version"] == "1.0.1"

    code, rolled = run(
        plane, "rollback", "--group", "canary", "--reason", "bad scores", "--from-model-version", V2
    )
    assert code == EXIT_OK
    assert rolled["to_component_version"] == "1.0.0"
    canary = plane.plane.latest_deployment(CANARY)
    assert canary["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"
    # Repeated (a retry after a lost answer): the same rollback, not a second one to an older model.
    code, again = run(
        plane, "rollback", "--group", "canary", "--reason", "bad scores", "--from-model-version", V2
    )
    assert code == EXIT_OK
    assert plane.plane.latest_deployment(CANARY)["components"][MODEL_COMPONENT]["componentVersion"] == "1.0.0"


def test_a_model_the_gate_rejects_exits_1(plane: ServerPlane, tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(model_bytes(V1, n_windows=10))  # below the gate's n_windows floor
    code, _ = run(plane, "deploy", str(path))
    assert code == EXIT_FAILED
    assert f"the gate rejected model {V1}" in capsys.readouterr().err


def test_publish_component_creates_the_version_once(plane: ServerPlane, tmp_path):
    argv = ["publish", "component", "--version", "1.3.0", "--bucket", BUCKET, "--build-dir", str(tmp_path)]
    code, published = run(plane, *argv)
    assert code == EXIT_OK
    assert published["component_name"] == "com.edgeml.AnomalyDetector"
    assert published["created"] is True
    assert published["artifact_uri"] == (
        f"s3://{BUCKET}/components/com.edgeml.AnomalyDetector/1.3.0/anomaly_detector.zip"
    )
    code, again = run(plane, *argv)
    assert (code, again["created"], again["component_arn"]) == (EXIT_OK, False, published["component_arn"])


def test_deploy_names_a_model_file_after_its_metadata_and_refuses_another_name(plane: ServerPlane, tmp_path):
    path = tmp_path / "named.onnx"
    metrics = json.dumps(training_metrics())
    path.write_bytes(
        build_model(metadata={"model_version": V1, "model_name": "pump", "training_metrics": metrics})
    )

    code, refused = run(plane, "deploy", str(path), "--model-name", "anomaly-detector")
    assert (code, refused) == (EXIT_USAGE, {})
    assert "Contents" not in plane.plane.s3.list_objects_v2(Bucket=BUCKET, Prefix="models/")

    code, deployed = run(plane, "deploy", str(path))
    assert code == EXIT_OK
    assert deployed["model"]["model_uri"] == f"s3://{BUCKET}/models/pump/{V1}/model.onnx"
    assert deployed["model"]["model_name"] == "pump"
