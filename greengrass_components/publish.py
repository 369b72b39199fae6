"""Publish a code component (archive + recipe) to the model store and Greengrass.

Artifact keys are version-addressed and written once: re-uploading a different object under a key that
a component version already points at breaks every device's digest check (ARTIFACT_CHECKSUM_MISMATCH).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from .packaging import Archive, build_archive, recipe_json_bytes, render_recipe

LOG = logging.getLogger(__name__)


class ComponentPublishError(RuntimeError):
    """The component could not be published without overwriting or conflicting."""


@dataclass(frozen=True)
class PublishedComponent:
    name: str
    version: str
    arn: str
    artifact_uri: str
    artifact_sha256: str
    created: bool


def _upload_once(s3: Any, bucket: str, key: str, archive: Archive) -> None:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
            raise
        s3.put_object(
            Bucket=bucket, Key=key, Body=archive.path.read_bytes(), Metadata={"sha256": archive.sha256}
        )
        return
    if head.get("Metadata", {}).get("sha256") != archive.sha256:
        raise ComponentPublishError(
            f"s3://{bucket}/{key} already holds a different archive; publish a new component version"
        )


def publish_component(
    *, s3: Any, greengrass: Any, bucket: str, component_dir: Path, version: str, build_dir: Path
) -> PublishedComponent:
    archive = build_archive(component_dir, build_dir)
    name = str(
        render_recipe(component_dir / "recipe.yaml", component_version=version, artifact_uri="s3://x/y")[
            "ComponentName"
        ]
    )
    key = f"components/{name}/{version}/{archive.path.name}"
    uri = f"s3://{bucket}/{key}"
    _upload_once(s3, bucket, key, archive)
    recipe = render_recipe(component_dir / "recipe.yaml", component_version=version, artifact_uri=uri)
    try:
        resp = greengrass.create_component_version(inlineRecipe=recipe_json_bytes(recipe))
        arn, created = str(resp["arn"]), True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConflictException":
            raise
        # Same name and version already published from the same archive key: idempotent re-run.
        arn, created = _existing_arn(greengrass, name, version), False
    LOG.info("component published", extra={"component": name, "version": version, "newly_created": created})
    return PublishedComponent(
        name=name, version=version, arn=arn, artifact_uri=uri, artifact_sha256=archive.sha256, created=created
    )


def _existing_arn(greengrass: Any, name: str, version: str) -> str:
    for page in greengrass.get_paginator("list_components").paginate(scope="PRIVATE"):
        for component in page.get("components", []):
            if component["componentName"] != name:
                continue
            versions = greengrass.get_paginator("list_component_versions").paginate(arn=component["arn"])
            for vpage in versions:
                for item in vpage.get("componentVersions", []):
                    if item["componentVersion"] == version:
                        return str(item["arn"])
    raise ComponentPublishError(f"{name} {version} conflicts with an existing version that is not listed")
