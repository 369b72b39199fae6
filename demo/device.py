"""A minimal stand-in for a Greengrass core device: resolve its deployment, fetch and verify artifacts.

It does what the nucleus does before starting our components: read the thing group's latest deployment,
download each component's artifacts from the model store, check their digests, unarchive ZIPs and pick
up the configuration the deployment merges in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class DeviceError(RuntimeError):
    """The device could not resolve or fetch its deployment."""


@dataclass(frozen=True)
class DeployedComponent:
    name: str
    version: str
    configuration: dict[str, Any]
    recipe: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)
    unarchived: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceDeployment:
    deployment_id: str
    components: dict[str, DeployedComponent]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Greengrass merges configuration updates key by key, recursively, not by replacing whole objects."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def latest_deployment(greengrass: Any, target_arn: str) -> dict[str, Any]:
    items = greengrass.list_deployments(targetArn=target_arn, historyFilter="LATEST_ONLY").get(
        "deployments", []
    )
    if not items:
        raise DeviceError(f"no deployment targets {target_arn}")
    deployment: dict[str, Any] = greengrass.get_deployment(deploymentId=items[0]["deploymentId"])
    return deployment


def _component_arn(greengrass: Any, name: str, version: str) -> str:
    for page in greengrass.get_paginator("list_components").paginate(scope="PRIVATE"):
        for component in page.get("components", []):
            if component["componentName"] == name:
                return f"{component['arn']}:versions:{version}"
    raise DeviceError(f"component {name} is not published")


def _check_digest(data: bytes, artifact: dict[str, Any], uri: str) -> None:
    digest, algorithm = artifact.get("Digest"), artifact.get("Algorithm", "SHA-256")
    if digest is None:
        return
    if algorithm != "SHA-256":
        raise DeviceError(f"unsupported digest algorithm {algorithm} for {uri}")
    if base64.b64encode(hashlib.sha256(data).digest()).decode() != digest:
        raise DeviceError(f"artifact {uri} does not match its recorded digest")


def _fetch(
    s3: Any, root: Path, name: str, version: str, recipe: dict[str, Any]
) -> tuple[list[Path], list[Path]]:
    manifests = recipe.get("Manifests") or [{}]
    artifacts_dir = root / "packages" / "artifacts" / name / version
    unarchived_dir = root / "packages" / "artifacts-unarchived" / name / version
    fetched: list[Path] = []
    unarchived: list[Path] = []
    for artifact in manifests[0].get("Artifacts", []):
        uri = str(artifact["URI"])
        parsed = urlparse(uri)
        if parsed.scheme != "s3":
            raise DeviceError(f"only s3:// artifacts are supported, got {uri}")
        data = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        _check_digest(data, artifact, uri)
        target = artifacts_dir / Path(parsed.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        fetched.append(target)
        if str(artifact.get("Unarchive", "NONE")).upper() == "ZIP":
            dest = unarchived_dir / target.stem
            with zipfile.ZipFile(target) as zf:
                zf.extractall(dest)
            unarchived.append(dest)
    return fetched, unarchived


def apply_deployment(greengrass: Any, s3: Any, *, target_arn: str, root: Path) -> DeviceDeployment:
    deployment = latest_deployment(greengrass, target_arn)
    resolved: dict[str, DeployedComponent] = {}
    for name, spec in deployment.get("components", {}).items():
        version = spec["componentVersion"]
        recipe_bytes = greengrass.get_component(
            arn=_component_arn(greengrass, name, version), recipeOutputFormat="JSON"
        )["recipe"]
        recipe = json.loads(recipe_bytes)
        defaults = recipe.get("ComponentConfiguration", {}).get("DefaultConfiguration", {})
        merge = json.loads(spec.get("configurationUpdate", {}).get("merge", "{}"))
        artifacts, unarchived = _fetch(s3, root, name, version, recipe)
        resolved[name] = DeployedComponent(
            name=name,
            version=version,
            configuration=deep_merge(defaults, merge),
            recipe=recipe,
            artifacts=artifacts,
            unarchived=unarchived,
        )
    return DeviceDeployment(deployment_id=str(deployment["deploymentId"]), components=resolved)
