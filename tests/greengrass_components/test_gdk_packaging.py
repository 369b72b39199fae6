"""The inference component in GDK's layout: gdk-config.json, the built recipe and the artifact agree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from device.recipe_vars import RecipeContext, interpolate
from greengrass_components.gdk_build import GDK_URI_PREFIX, build, read_gdk_config
from greengrass_components.packaging import PackagingError
from tests.support.recipes import lower_keys

REPO = Path(__file__).resolve().parents[2]
COMPONENT_DIR = REPO / "greengrass_components" / "anomaly_detector"
RECIPE_SCHEMA = Path("/work/shared/schemas/greengrass-recipe.schema.json")
# The parts of GDK's own gdk-config schema (gdk/static/config_schema.json) our file relies on.
GDK_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["component", "gdk_version"],
    "properties": {
        "gdk_version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "component": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["author", "version", "build", "publish"],
                "properties": {
                    "version": {"anyOf": [{"pattern": r"^\d+\.\d+\.\d+"}, {"enum": ["NEXT_PATCH"]}]},
                    "build": {
                        "type": "object",
                        "required": ["build_system"],
                        "properties": {
                            "build_system": {"enum": ["zip", "maven", "gradle", "gradlew", "custom"]}
                        },
                        "if": {"properties": {"build_system": {"const": "custom"}}},
                        "then": {"required": ["custom_build_command"]},
                    },
                    "publish": {
                        "type": "object",
                        "required": ["bucket", "region"],
                        "properties": {
                            "region": {
                                "enum": ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1"]
                            }
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture
def component_copy(tmp_path: Path) -> Path:
    """The package tree GDK would see, copied so builds never write into the source tree."""
    root = tmp_path / "repo"
    pkg = root / "greengrass_components"
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "packaging.py", "gdk_build.py"):
        shutil.copy(REPO / "greengrass_components" / name, pkg / name)
    shutil.copytree(
        COMPONENT_DIR,
        pkg / "anomaly_detector",
        ignore=shutil.ignore_patterns("__pycache__", "greengrass-build"),
    )
    return pkg / "anomaly_detector"


def test_gdk_config_follows_gdk_schema_and_names_the_recipe_component() -> None:
    document = json.loads((COMPONENT_DIR / "gdk-config.json").read_text())
    jsonschema.Draft7Validator(GDK_CONFIG_SCHEMA).validate(document)
    gdk = read_gdk_config(COMPONENT_DIR)
    template = yaml.safe_load((COMPONENT_DIR / "recipe.yaml").read_text())
    assert gdk.name == template["ComponentName"]
    assert gdk.author == template["ComponentPublisher"]


def test_custom_build_command_from_gdk_config_builds_the_gdk_layout(component_copy: Path) -> None:
    spec = json.loads((component_copy / "gdk-config.json").read_text())["component"][
        "com.edgeml.AnomalyDetector"
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python3` = this venv's interpreter
    done = subprocess.run(
        spec["build"]["custom_build_command"],
        cwd=component_copy,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = component_copy / "greengrass-build"
    archive = out / "artifacts" / "com.edgeml.AnomalyDetector" / "1.0.0" / "anomaly_detector.zip"
    recipe = yaml.safe_load((out / "recipes" / "recipe.yaml").read_text())
    assert archive.is_file()
    assert json.loads(done.stdout)["artifact"].endswith("anomaly_detector.zip")
    # What `gdk component publish` checks: every s3 artifact's file name is in the artifacts folder.
    uris = [a["URI"] for m in recipe["Manifests"] for a in m["Artifacts"]]
    assert uris == [f"{GDK_URI_PREFIX}/anomaly_detector.zip"] * 2
    assert all((archive.parent / Path(uri).name).is_file() for uri in uris)
    assert recipe["ComponentVersion"] == "1.0.0"
    errors = list(
        jsonschema.Draft7Validator(json.loads(RECIPE_SCHEMA.read_text())).iter_errors(lower_keys(recipe))
    )
    assert errors == []


def test_recipe_run_step_works_against_the_unarchived_artifact(component_copy: Path, tmp_path: Path) -> None:
    built = build(component_copy)
    recipe = yaml.safe_load(built.recipe_path.read_text())
    names = zipfile.ZipFile(built.archive.path).namelist()
    # GDK's zip build skips these; so does ours.
    assert "__main__.py" in names
    assert not {"gdk-config.json", "recipe.yaml"} & set(names)
    assert not [n for n in names if n.startswith("greengrass-build/") or "__pycache__" in n]

    # Unarchive as the nucleus does: <decompressedPath>/<archive stem>/...
    decompressed = tmp_path / "artifacts-unarchived" / "com.edgeml.AnomalyDetector" / "1.0.0"
    zipfile.ZipFile(built.archive.path).extractall(decompressed / "anomaly_detector")
    manifest = recipe["Manifests"][0]
    assert manifest["Artifacts"][0]["Unarchive"] == "ZIP"
    ctx = RecipeContext(
        component="com.edgeml.AnomalyDetector",
        thing_name="gw-01",
        kernel_root=tmp_path,
        artifacts_path=tmp_path / "artifacts",
        decompressed_path=decompressed,
        work_path=tmp_path / "work",
        configuration=recipe["ComponentConfiguration"]["DefaultConfiguration"],
    )
    # Every variable in Run resolves from the recipe's own defaults (no missing configuration key).
    run = interpolate(manifest["Lifecycle"]["Run"]["Script"], ctx)
    # Left over: only {iot:thingName} inside the default topics, which the component substitutes itself.
    assert re.findall(r"\{\w+:\w+\}", run) == ["{iot:thingName}"] * 3  # anomalies, health, acks
    cd, _, command = run.partition(" && exec ")
    assert cd == f"cd {decompressed}"
    # The published code alone (no source tree on sys.path) accepts every flag the Run step passes.
    argv = command.split()
    assert argv[:3] == [f"{tmp_path}/work/venv/bin/python3", "-m", "anomaly_detector"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "anomaly_detector", "--help"],
        cwd=decompressed,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    flags = {word for word in argv if word.startswith("--")}
    assert flags
    assert all(flag in done.stdout for flag in flags), flags - set(done.stdout.split())


def test_build_is_reproducible_and_refuses_a_mismatched_config(component_copy: Path) -> None:
    first = build(component_copy).archive.sha256
    assert build(component_copy).archive.sha256 == first
    config = component_copy / "gdk-config.json"
    document = json.loads(config.read_text())
    document["component"] = {"com.example.Other": document["component"]["com.edgeml.AnomalyDetector"]}
    config.write_text(json.dumps(document))
    with pytest.raises(
        PackagingError, match=r"names com\.example\.Other but the recipe is for com\.edgeml\.AnomalyDetector"
    ):
        build(component_copy)
    config.write_text("{}")
    with pytest.raises(PackagingError, match="is not a one-component GDK configuration"):
        read_gdk_config(component_copy)
