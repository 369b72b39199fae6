"""Component recipes: parse JSON or YAML, read the fields the control plane needs, render back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from standins.greengrass_fake.errors import ValidationError
from standins.greengrass_fake.semver import is_semver

RECIPE_FORMAT_VERSION = "2020-01-25"


@dataclass(frozen=True)
class ArtifactRef:
    """Where one artifact sits inside the recipe document, so digests can be written back in place."""

    manifest_index: int
    artifact_index: int
    uri: str


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    description: str | None
    publisher: str | None
    platforms: tuple[dict[str, Any], ...]
    artifacts: tuple[ArtifactRef, ...]
    document: dict[str, Any]


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: an unquoted date stays the string that was written,
    so a YAML recipe renders back to JSON unchanged (the service treats recipe values as strings)."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _invalid(detail: str) -> ValidationError:
    return ValidationError(f"The recipe is invalid: {detail}", reason="OTHER")


def parse_recipe(raw: bytes) -> Recipe:
    """The service chooses the parser from the first byte: `{` means JSON, anything else YAML."""
    text = raw.decode("utf-8", errors="strict") if raw else ""
    stripped = text.lstrip()
    if not stripped:
        raise _invalid("the recipe is empty")
    try:
        if stripped.startswith("{"):
            document = json.loads(stripped)
        else:
            document = yaml.load(stripped, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise _invalid(f"cannot parse recipe: {exc}") from exc
    if not isinstance(document, dict):
        raise _invalid("the recipe must be a JSON or YAML object")
    return _read(document)


def _text(document: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = document.get(key)
    if value is None:
        if required:
            raise _invalid(f"{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key} must be a non-empty string")
    return value


def _required_text(document: dict[str, Any], key: str) -> str:
    value = _text(document, key, required=True)
    if value is None:  # _text raises first; this narrows the type
        raise _invalid(f"{key} is required")
    return value


def _read(document: dict[str, Any]) -> Recipe:
    fmt = document.get("RecipeFormatVersion")
    if fmt != RECIPE_FORMAT_VERSION:
        raise _invalid(f"RecipeFormatVersion must be {RECIPE_FORMAT_VERSION!r}, got {fmt!r}")
    name = _required_text(document, "ComponentName")
    version = _required_text(document, "ComponentVersion")
    if len(name) > 128:
        raise _invalid("ComponentName must be at most 128 characters")
    if not is_semver(version) or len(version) > 64:
        raise _invalid(f"ComponentVersion {version!r} is not a semantic version (major.minor.patch)")
    manifests = document.get("Manifests", [])
    if not isinstance(manifests, list):
        raise _invalid("Manifests must be a list")
    platforms: list[dict[str, Any]] = []
    artifacts: list[ArtifactRef] = []
    for m_index, manifest in enumerate(manifests):
        if not isinstance(manifest, dict):
            raise _invalid(f"Manifests[{m_index}] must be an object")
        platform = manifest.get("Platform", {})
        if not isinstance(platform, dict):
            raise _invalid(f"Manifests[{m_index}].Platform must be an object")
        attributes = {
            str(k): str(v)
            for k, v in platform.items()
            if isinstance(v, str | int | float) and str(v) and str(k)
        }
        platform_entry: dict[str, Any] = {"attributes": attributes} if attributes else {}
        label = manifest.get("Name") or platform.get("os")
        if isinstance(label, str) and label:
            platform_entry["name"] = label
        platforms.append(platform_entry)
        entries = manifest.get("Artifacts", [])
        if not isinstance(entries, list):
            raise _invalid(f"Manifests[{m_index}].Artifacts must be a list")
        seen: set[str] = set()
        for a_index, artifact in enumerate(entries):
            uri = artifact.get("URI") if isinstance(artifact, dict) else None
            if not isinstance(uri, str) or not uri:
                raise _invalid(f"Manifests[{m_index}].Artifacts[{a_index}].URI is required")
            file_name = uri.rstrip("/").rsplit("/", 1)[-1]
            if file_name in seen:
                raise _invalid(f"artifact file name {file_name!r} appears twice in Manifests[{m_index}]")
            seen.add(file_name)
            artifacts.append(ArtifactRef(m_index, a_index, uri))
    return Recipe(
        name=name,
        version=version,
        description=_text(document, "ComponentDescription", required=False),
        publisher=_text(document, "ComponentPublisher", required=False),
        platforms=tuple(platforms),
        artifacts=tuple(artifacts),
        document=document,
    )


def render_recipe(document: dict[str, Any], output_format: str) -> bytes:
    if output_format == "YAML":
        return yaml.safe_dump(document, sort_keys=False).encode("utf-8")
    return json.dumps(document, indent=2).encode("utf-8")
