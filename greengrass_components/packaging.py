"""Build a component's artifact archive and render its recipe, reproducibly.

The archive is deterministic (sorted entries, fixed timestamps and modes) so the same source always has
the same sha256: Greengrass records each artifact's digest at component-version creation, and a
rebuilt-but-identical archive must not look like a new artifact.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# 1980-01-01 is the earliest timestamp a zip entry can carry.
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_EXCLUDED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", "greengrass-build", "zip-build"}
_EXCLUDED_SUFFIXES = {".pyc", ".pyo"}
_EXCLUDED_NAMES = {"recipe.yaml", "gdk-config.json"}

VERSION_PLACEHOLDER = "{COMPONENT_VERSION}"
ARTIFACT_URI_PLACEHOLDER = "{ARTIFACT_URI}"


class PackagingError(ValueError):
    """The component folder or its recipe cannot be packaged."""


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    size: int


def _included(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return (
        path.is_file()
        and not set(rel.parts) & _EXCLUDED_PARTS
        and path.suffix not in _EXCLUDED_SUFFIXES
        and rel.as_posix() not in _EXCLUDED_NAMES
    )


def build_archive(component_dir: Path, out_dir: Path) -> Archive:
    """Zip the component folder's contents into `<out_dir>/<folder name>.zip`.

    Greengrass unarchives a ZIP artifact into a folder named after the archive, so the folder name is the
    import name of the package on the device.
    """
    if not (component_dir / "__main__.py").is_file():
        raise PackagingError(f"{component_dir} has no __main__.py: not a runnable component package")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{component_dir.name}.zip"
    files = sorted(p for p in component_dir.rglob("*") if _included(p, component_dir))
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(component_dir).as_posix(), date_time=_FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    data = target.read_bytes()
    return Archive(path=target, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def render_recipe(recipe_path: Path, *, component_version: str, artifact_uri: str) -> dict[str, Any]:
    """Fill the recipe template's placeholders and return it as a dict."""
    text = recipe_path.read_text(encoding="utf-8")
    for placeholder in (VERSION_PLACEHOLDER, ARTIFACT_URI_PLACEHOLDER):
        if placeholder not in text:
            raise PackagingError(f"{recipe_path} has no {placeholder} placeholder")
    text = text.replace(VERSION_PLACEHOLDER, component_version).replace(
        ARTIFACT_URI_PLACEHOLDER, artifact_uri
    )
    recipe = yaml.safe_load(text)
    if not isinstance(recipe, dict):
        raise PackagingError(f"{recipe_path} is not a YAML mapping")
    return recipe


def recipe_json_bytes(recipe: dict[str, Any]) -> bytes:
    """JSON, not YAML: the Greengrass service picks the recipe parser from the document's first byte."""
    return json.dumps(recipe, indent=2, sort_keys=False).encode("utf-8")
