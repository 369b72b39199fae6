"""The model component's recipe (docs/contracts.md §3), rendered as JSON.

Greengrass picks the recipe parser from the document's first byte, so the recipe is always JSON
(AWS-FACTS §2.1). The model's identity lives in ``DefaultConfiguration`` so that a later publish can
recognise an already-published model by its sha256 (see ``core``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from lambdas.publisher.validation import ModelInfo

RECIPE_FORMAT_VERSION = "2020-01-25"
COMPONENT_PUBLISHER = "edgeml"


def render_model_recipe(
    *,
    component_name: str,
    component_version: str,
    model: ModelInfo,
    artifact_uri: str,
) -> dict[str, object]:
    """The recipe of one model component version: configuration that describes the model, one artifact."""
    return {
        "RecipeFormatVersion": RECIPE_FORMAT_VERSION,
        "ComponentName": component_name,
        "ComponentVersion": component_version,
        "ComponentDescription": (
            f"Anomaly detection model {model.model_version} ({model.detector}, window {model.window_length}, "
            f"channels {', '.join(model.channels)})"
        ),
        "ComponentPublisher": COMPONENT_PUBLISHER,
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                "modelVersion": model.model_version,
                "sha256": model.sha256,
                "threshold": model.threshold,
                "window": model.window_length,
                "channels": list(model.channels),
            }
        },
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                # The file lands at packages/artifacts/<component>/<version>/model.onnx; the inference
                # component reads it from there, so it must stay one plain file (no unarchiving).
                "Artifacts": [{"URI": artifact_uri, "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}],
                "Lifecycle": {},
            }
        ],
    }


def recipe_json(recipe: Mapping[str, object]) -> bytes:
    """Serialise a recipe deterministically (same model, same bytes)."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode("utf-8")


def recipe_model_sha256(recipe_document: bytes) -> str | None:
    """The model sha256 recorded in a model component recipe, or None if it records none."""
    try:
        recipe = json.loads(recipe_document)
    except ValueError:
        return None
    if not isinstance(recipe, dict):
        return None
    configuration = recipe.get("ComponentConfiguration")
    defaults = configuration.get("DefaultConfiguration") if isinstance(configuration, dict) else None
    sha256 = defaults.get("sha256") if isinstance(defaults, dict) else None
    return sha256 if isinstance(sha256, str) else None


def recipe_artifact_uris(recipe_document: bytes) -> list[str]:
    """Every artifact URI of a recipe's manifests (empty if the document is not a recipe)."""
    try:
        recipe = json.loads(recipe_document)
    except ValueError:
        return []
    manifests = recipe.get("Manifests") if isinstance(recipe, dict) else None
    uris: list[str] = []
    for manifest in manifests if isinstance(manifests, list) else []:
        artifacts = manifest.get("Artifacts") if isinstance(manifest, dict) else None
        for artifact in artifacts if isinstance(artifacts, list) else []:
            uri = artifact.get("URI") if isinstance(artifact, dict) else None
            if isinstance(uri, str):
                uris.append(uri)
    return uris
