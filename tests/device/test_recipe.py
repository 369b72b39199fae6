from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device import UnsupportedRecipeError
from device.recipe import DevicePlatform, plan_component, version_satisfies
from greengrass_components.packaging import render_recipe

from .helpers import toy_recipe

REPO = Path(__file__).resolve().parents[2]
AMD64 = DevicePlatform("linux", "amd64")


def _published() -> dict[str, Any]:
    return render_recipe(
        REPO / "greengrass_components" / "anomaly_detector" / "recipe.yaml",
        component_version="1.2.3",
        artifact_uri="s3://bucket/components/com.edgeml.AnomalyDetector/1.2.3/anomaly_detector.zip",
    )


def test_the_inference_component_recipe_is_fully_supported() -> None:
    plan = plan_component(_published(), AMD64)
    assert (plan.name, plan.version) == ("com.edgeml.AnomalyDetector", "1.2.3")
    assert [(a.file_name, a.unarchive, a.read, a.execute) for a in plan.artifacts] == [
        ("anomaly_detector.zip", "ZIP", "OWNER", "NONE")
    ]
    assert [(d.name, d.requirement, d.hard) for d in plan.dependencies] == [
        ("com.edgeml.AnomalyModel", ">=1.0.0", False)
    ]
    assert plan.install is not None
    assert plan.install.timeout_s == 900
    assert plan.run is not None
    assert "--kernel-root {kernel:rootPath}" in plan.run.script
    assert plan.default_configuration["source"] == "ipc"


def test_the_first_matching_manifest_is_chosen() -> None:
    arm = plan_component(_published(), DevicePlatform("linux", "aarch64"))
    assert arm.run is not None
    with pytest.raises(UnsupportedRecipeError, match=r"no manifest matches platform linux/x86"):
        plan_component(_published(), DevicePlatform("linux", "x86"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["Manifests"][0]["Lifecycle"].update(Bootstrap="x"),
            r"lifecycle phase\(s\) \['Bootstrap'\]",
        ),
        (
            lambda r: r["Manifests"][0]["Lifecycle"].update(
                Install={"Script": "x", "RequiresPrivilege": True}
            ),
            r"Lifecycle.Install.RequiresPrivilege is not supported",
        ),
        (
            lambda r: r["Manifests"][0]["Lifecycle"].update(Install={"Script": "x", "Skipif": "always"}),
            r"Skipif 'always' \(only 'onpath X' and 'exists X'\)",
        ),
        (lambda r: r.update(ComponentType="aws.greengrass.plugin"), r"ComponentType 'aws.greengrass.plugin'"),
        (lambda r: r["Manifests"][0].update(Selections=["x"]), r"manifest key\(s\) \['Selections'\]"),
        (lambda r: r["Manifests"][0]["Artifacts"][0].update(URI="https://x/y.zip"), r"only s3:// URIs"),
        (lambda r: r["Manifests"][0]["Artifacts"][0].update(Unarchive="TAR"), r"Unarchive 'TAR'"),
        (
            lambda r: r["Manifests"][0]["Platform"].update(runtime="lite"),
            r"platform attribute\(s\) \['runtime'\]",
        ),
        (lambda r: r.update(Lifecycle={}), r"recipe key\(s\) \['Lifecycle'\]"),
        (lambda r: r.update(RecipeFormatVersion="2023-01-01"), r"RecipeFormatVersion '2023-01-01'"),
    ],
)
def test_unsupported_features_are_refused_by_name(mutate: Any, message: str) -> None:
    recipe = toy_recipe()
    mutate(recipe)
    with pytest.raises(UnsupportedRecipeError, match=message):
        plan_component(recipe, AMD64)


def test_version_requirements() -> None:
    assert version_satisfies("1.0.3", ">=1.0.0")
    assert version_satisfies("1.0.3", ">1.0.0 <2.0.0")
    assert version_satisfies("1.0.0", "1.0.0")
    assert not version_satisfies("2.0.0", ">=1.0.0 <2.0.0")
    with pytest.raises(UnsupportedRecipeError, match=r"version requirement '1.x \|\| 2.x' is not supported"):
        version_satisfies("1.0.0", "1.x || 2.x")
    with pytest.raises(UnsupportedRecipeError, match=r"version requirement '~1.0.0' is not supported"):
        version_satisfies("1.0.0", "~1.0.0")
