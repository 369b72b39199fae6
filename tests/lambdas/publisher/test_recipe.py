from __future__ import annotations

import json
from typing import Any

from lambdas.publisher.recipe import (
    recipe_artifact_uris,
    recipe_json,
    recipe_model_sha256,
    render_model_recipe,
)
from lambdas.publisher.validation import validate_model
from tests.lambdas.publisher.onnx_models import build_model

URI = "s3://edgeml-models/components/com.edgeml.AnomalyModel/1.0.3/model.onnx"


def rendered() -> tuple[dict[str, Any], bytes]:
    model = validate_model(build_model(channels=("a", "b")), max_bytes=1_000_000)
    recipe = render_model_recipe(
        component_name="com.edgeml.AnomalyModel", component_version="1.0.3", model=model, artifact_uri=URI
    )
    return recipe, recipe_json(recipe)


def test_recipe_is_json_with_the_model_artifact():
    recipe, document = rendered()
    assert document.startswith(b"{")  # Greengrass picks its parser from the first byte
    parsed = json.loads(document)
    assert parsed == recipe
    assert parsed["RecipeFormatVersion"] == "2020-01-25"
    assert (parsed["ComponentName"], parsed["ComponentVersion"]) == ("com.edgeml.AnomalyModel", "1.0.3")
    assert "20261124T201500Z-3f2a9c1d" in parsed["ComponentDescription"]
    assert parsed["ComponentPublisher"] == "edgeml"
    assert parsed["Manifests"] == [
        {
            "Platform": {"os": "linux"},
            "Artifacts": [{"URI": URI, "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}],
            "Lifecycle": {},
        }
    ]


def test_recipe_configuration_describes_the_model():
    _, document = rendered()
    defaults = json.loads(document)["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["modelVersion"] == "20261124T201500Z-3f2a9c1d"
    assert (defaults["threshold"], defaults["window"], defaults["channels"]) == (1.5, 8, ["a", "b"])
    assert recipe_model_sha256(document) == defaults["sha256"]
    assert len(defaults["sha256"]) == 64


def test_recipe_bytes_are_deterministic():
    assert rendered()[1] == rendered()[1]


def test_recipes_without_a_model_sha256_are_recognised_as_such():
    assert recipe_model_sha256(b"RecipeFormatVersion: '2020-01-25'") is None
    assert recipe_model_sha256(b'{"ComponentConfiguration": {"DefaultConfiguration": {}}}') is None
    assert recipe_model_sha256(b"[1]") is None


def test_artifact_uris_are_read_back_from_a_recipe():
    assert recipe_artifact_uris(rendered()[1]) == [URI]
    two = {"Manifests": [{"Artifacts": [{"URI": "s3://b/a"}]}, {"Artifacts": [{"URI": "s3://b/c"}, {}]}]}
    assert recipe_artifact_uris(json.dumps(two).encode()) == ["s3://b/a", "s3://b/c"]
    assert recipe_artifact_uris(b"RecipeFormatVersion: '2020-01-25'") == []
    assert recipe_artifact_uris(b'{"Manifests": "none"}') == []
    assert recipe_artifact_uris(b"[1]") == []
