"""``gdk component build`` for our components: the ``custom`` build system's command (gdk-config.json).

Why custom and not GDK's ``zip`` build: GDK's zip build finds each artifact by the file name at the end of
its recipe URI, and our recipe template carries ``{ARTIFACT_URI}`` (filled by ``publish.py`` with the
model store's version-addressed key). This command produces exactly what GDK's zip build would, in the
folders ``gdk component publish`` reads:

- ``greengrass-build/artifacts/<ComponentName>/<version>/<folder>.zip`` (the same deterministic archive
  ``publish.py`` uploads);
- ``greengrass-build/recipes/recipe.yaml`` with artifact URIs
  ``s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/<folder>.zip``, the tokens GDK publish replaces.

Run from the repository root::

    python -m greengrass_components.gdk_build greengrass_components/anomaly_detector
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .packaging import Archive, PackagingError, build_archive, render_recipe

GDK_CONFIG = "gdk-config.json"
BUILD_DIR = "greengrass-build"
GDK_URI_PREFIX = "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION"


@dataclass(frozen=True)
class GdkComponent:
    name: str
    version: str
    author: str
    bucket: str
    region: str


@dataclass(frozen=True)
class GdkBuild:
    recipe_path: Path
    archive: Archive


def read_gdk_config(component_dir: Path) -> GdkComponent:
    path = component_dir / GDK_CONFIG
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        ((name, spec),) = document["component"].items()
        return GdkComponent(
            name=str(name),
            version=str(spec["version"]),
            author=str(spec["author"]),
            bucket=str(spec["publish"]["bucket"]),
            region=str(spec["publish"]["region"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PackagingError(f"{path} is not a one-component GDK configuration: {exc!r}") from exc


def build(component_dir: Path) -> GdkBuild:
    """Write the GDK build layout under ``<component_dir>/greengrass-build`` (replaced if present)."""
    gdk = read_gdk_config(component_dir)
    out = component_dir / BUILD_DIR
    artifacts = out / "artifacts" / gdk.name / gdk.version
    archive = build_archive(component_dir, artifacts)
    recipe = render_recipe(
        component_dir / "recipe.yaml",
        component_version=gdk.version,
        artifact_uri=f"{GDK_URI_PREFIX}/{archive.path.name}",
    )
    if recipe.get("ComponentName") != gdk.name:
        raise PackagingError(
            f"{GDK_CONFIG} names {gdk.name} but the recipe is for {recipe.get('ComponentName')}: "
            "publish would fail"
        )
    # GDK writes the gdk-config author into the built recipe.
    recipe["ComponentPublisher"] = gdk.author
    recipes = out / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    recipe_path = recipes / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return GdkBuild(recipe_path=recipe_path, archive=archive)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greengrass_components.gdk_build")
    parser.add_argument("component_dir", type=Path, nargs="?", default=Path())
    args = parser.parse_args(argv)
    try:
        result = build(args.component_dir)
    except PackagingError as exc:
        sys.stderr.write(f"gdk build failed: {exc}\n")
        return 1
    sys.stdout.write(
        json.dumps(
            {
                "recipe": str(result.recipe_path),
                "artifact": str(result.archive.path),
                "sha256": result.archive.sha256,
            }
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
