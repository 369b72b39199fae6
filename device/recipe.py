"""A recipe, checked and reduced to what the runner executes for this device's platform.

Every key the runner does not implement is refused here, before anything is downloaded or run: a
silently skipped ``Shutdown`` or ``RequiresPrivilege`` would make the local run differ from a device's.
"""

from __future__ import annotations

import platform as host_platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from standins.greengrass_fake.semver import SemVer, is_semver

from .errors import UnsupportedRecipeError

RECIPE_FORMAT_VERSION = "2020-01-25"
_TOP_KEYS = frozenset(
    {
        "RecipeFormatVersion",
        "ComponentName",
        "ComponentVersion",
        "ComponentDescription",
        "ComponentPublisher",
        "ComponentType",
        "ComponentConfiguration",
        "ComponentDependencies",
        "Manifests",
    }
)
_MANIFEST_KEYS = frozenset({"Platform", "Lifecycle", "Artifacts", "Name"})
_PHASES = frozenset({"Setenv", "Install", "Run"})
_STEP_KEYS = frozenset({"Script", "Timeout", "Setenv", "Skipif", "RequiresPrivilege"})
_ARTIFACT_KEYS = frozenset({"URI", "Unarchive", "Digest", "Algorithm", "Permission"})
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}
_REQUIREMENT = re.compile(r"^(>=|<=|>|<|=)?\s*(\S+)$")


@dataclass(frozen=True)
class DevicePlatform:
    os: str = "linux"
    architecture: str = "amd64"

    @classmethod
    def of_host(cls) -> DevicePlatform:
        machine = host_platform.machine().lower()
        return cls(os="linux", architecture=_ARCHITECTURES.get(machine, machine))


@dataclass(frozen=True)
class Step:
    script: str
    timeout_s: float | None = None
    setenv: dict[str, str] = field(default_factory=dict)
    skipif: str | None = None


@dataclass(frozen=True)
class Artifact:
    uri: str
    unarchive: Literal["NONE", "ZIP"]
    digest: str | None
    algorithm: str
    read: str
    execute: str

    @property
    def file_name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dependency:
    name: str
    requirement: str
    hard: bool

    def allows(self, version: str) -> bool:
        return version_satisfies(version, self.requirement)


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    version: str
    default_configuration: dict[str, object]
    dependencies: tuple[Dependency, ...]
    artifacts: tuple[Artifact, ...]
    setenv: dict[str, str]
    install: Step | None
    run: Step | None


def _refuse(component: str, what: str) -> UnsupportedRecipeError:
    return UnsupportedRecipeError(f"{component}: {what} is not supported by the local device runner")


def version_satisfies(version: str, requirement: str) -> bool:
    """npm-style ranges, the subset Greengrass recipes use: space-separated comparators, all must hold."""
    if "||" in requirement or not requirement.strip():
        raise UnsupportedRecipeError(f"version requirement {requirement!r} is not supported")
    candidate = SemVer(version)
    for clause in requirement.split():
        match = _REQUIREMENT.match(clause)
        if match is None or not is_semver(match.group(2)):
            raise UnsupportedRecipeError(f"version requirement {requirement!r} is not supported")
        op, bound = match.group(1) or "=", SemVer(match.group(2))
        holds = {
            ">=": candidate >= bound,
            "<=": candidate <= bound,
            ">": candidate > bound,
            "<": candidate < bound,
            "=": candidate == bound,
        }[op]
        if not holds:
            return False
    return True


def _string_map(value: object, component: str, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str | int | float) for v in value.values()):
        raise UnsupportedRecipeError(f"{component}: {where} must map names to strings")
    return {str(k): str(v) for k, v in value.items()}


def _step(value: object, component: str, phase: str) -> Step | None:
    if value is None:
        return None
    if isinstance(value, str):
        return Step(script=value)
    if not isinstance(value, Mapping):
        raise UnsupportedRecipeError(f"{component}: Lifecycle.{phase} must be a script or a mapping")
    unknown = set(value) - _STEP_KEYS
    if unknown:
        raise _refuse(component, f"Lifecycle.{phase} key(s) {sorted(unknown)}")
    if value.get("RequiresPrivilege") not in (None, False, "false"):
        raise _refuse(component, f"Lifecycle.{phase}.RequiresPrivilege")
    script = value.get("Script")
    if not isinstance(script, str) or not script.strip():
        raise UnsupportedRecipeError(f"{component}: Lifecycle.{phase}.Script must be a non-empty string")
    skipif = value.get("Skipif")
    if skipif is not None and (
        not isinstance(skipif, str) or skipif.split(" ", 1)[0] not in ("onpath", "exists")
    ):
        raise _refuse(component, f"Lifecycle.{phase}.Skipif {skipif!r} (only 'onpath X' and 'exists X')")
    timeout = value.get("Timeout")
    if timeout is not None and not isinstance(timeout, int | float):
        raise UnsupportedRecipeError(f"{component}: Lifecycle.{phase}.Timeout must be a number of seconds")
    return Step(
        script=script,
        timeout_s=float(timeout) if timeout is not None else None,
        setenv=_string_map(value.get("Setenv"), component, f"Lifecycle.{phase}.Setenv"),
        skipif=skipif,
    )


def _platform_matches(spec: object, device: DevicePlatform, component: str) -> bool:
    if spec is None:
        return True
    if not isinstance(spec, Mapping):
        raise UnsupportedRecipeError(f"{component}: Manifests[].Platform must be a mapping")
    unknown = set(spec) - {"os", "architecture"}
    if unknown:
        raise _refuse(component, f"platform attribute(s) {sorted(unknown)}")
    os_name, arch = spec.get("os", "*"), spec.get("architecture", "*")
    return os_name in ("*", device.os) and arch in ("*", device.architecture)


def _artifact(value: object, component: str) -> Artifact:
    if not isinstance(value, Mapping):
        raise UnsupportedRecipeError(f"{component}: each artifact must be a mapping")
    unknown = set(value) - _ARTIFACT_KEYS
    if unknown:
        raise _refuse(component, f"artifact key(s) {sorted(unknown)}")
    uri = str(value.get("URI", ""))
    if not uri.startswith("s3://"):
        raise _refuse(component, f"artifact URI {uri!r} (only s3:// URIs)")
    unarchive = str(value.get("Unarchive", "NONE")).upper()
    if unarchive not in ("NONE", "ZIP"):
        raise _refuse(component, f"Unarchive {unarchive!r}")
    permission = value.get("Permission") or {}
    if not isinstance(permission, Mapping) or set(permission) - {"Read", "Execute"}:
        raise _refuse(component, f"artifact Permission {permission!r}")
    read, execute = str(permission.get("Read", "OWNER")), str(permission.get("Execute", "NONE"))
    if read not in ("NONE", "OWNER", "ALL") or execute not in ("NONE", "OWNER", "ALL"):
        raise UnsupportedRecipeError(f"{component}: artifact Permission values must be NONE, OWNER or ALL")
    digest = value.get("Digest")
    return Artifact(
        uri=uri,
        unarchive="ZIP" if unarchive == "ZIP" else "NONE",
        digest=str(digest) if digest is not None else None,
        algorithm=str(value.get("Algorithm", "SHA-256")),
        read=read,
        execute=execute,
    )


def _dependencies(value: object, component: str) -> tuple[Dependency, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise UnsupportedRecipeError(f"{component}: ComponentDependencies must be a mapping")
    deps = []
    for name, spec in value.items():
        if not isinstance(spec, Mapping) or set(spec) - {"VersionRequirement", "DependencyType"}:
            raise _refuse(component, f"dependency {name} specification {spec!r}")
        kind = str(spec.get("DependencyType", "HARD")).upper()
        if kind not in ("HARD", "SOFT"):
            raise UnsupportedRecipeError(f"{component}: dependency {name} has DependencyType {kind!r}")
        deps.append(Dependency(str(name), str(spec.get("VersionRequirement", ">=0.0.0")), kind == "HARD"))
    return tuple(deps)


def _choose_manifest(manifests: object, device: DevicePlatform, name: str) -> Mapping[str, object]:
    """Every manifest is checked (an unsupported key anywhere is refused); the first match wins."""
    if not isinstance(manifests, list):
        raise UnsupportedRecipeError(f"{name}: Manifests must be a list")
    chosen: Mapping[str, object] | None = None
    for manifest in manifests:
        if not isinstance(manifest, Mapping):
            raise UnsupportedRecipeError(f"{name}: each manifest must be a mapping")
        extra = set(manifest) - _MANIFEST_KEYS
        if extra:
            raise _refuse(name, f"manifest key(s) {sorted(extra)}")
        if chosen is None and _platform_matches(manifest.get("Platform"), device, name):
            chosen = manifest
    if chosen is None:
        raise UnsupportedRecipeError(
            f"{name}: no manifest matches platform {device.os}/{device.architecture}"
        )
    return chosen


def plan_component(recipe: Mapping[str, object], device: DevicePlatform) -> ComponentPlan:
    """Check the whole recipe and pick the first manifest that matches the device, as the nucleus does."""
    name = str(recipe.get("ComponentName", "<unnamed>"))
    unknown = set(recipe) - _TOP_KEYS
    if unknown:
        raise _refuse(name, f"recipe key(s) {sorted(unknown)}")
    if recipe.get("RecipeFormatVersion") != RECIPE_FORMAT_VERSION:
        raise _refuse(name, f"RecipeFormatVersion {recipe.get('RecipeFormatVersion')!r}")
    if recipe.get("ComponentType", "aws.greengrass.generic") != "aws.greengrass.generic":
        raise _refuse(name, f"ComponentType {recipe.get('ComponentType')!r}")
    configuration = recipe.get("ComponentConfiguration") or {}
    if not isinstance(configuration, Mapping) or set(configuration) - {"DefaultConfiguration"}:
        raise _refuse(name, "ComponentConfiguration other than DefaultConfiguration")
    defaults = configuration.get("DefaultConfiguration") or {}
    if not isinstance(defaults, Mapping):
        raise UnsupportedRecipeError(f"{name}: DefaultConfiguration must be a mapping")
    chosen = _choose_manifest(recipe.get("Manifests") or [], device, name)
    lifecycle = chosen.get("Lifecycle") or {}
    if not isinstance(lifecycle, Mapping):
        raise UnsupportedRecipeError(f"{name}: Lifecycle must be a mapping")
    phases = set(lifecycle) - _PHASES
    if phases:
        raise _refuse(name, f"lifecycle phase(s) {sorted(phases)}")
    artifacts = chosen.get("Artifacts") or []
    if not isinstance(artifacts, list):
        raise UnsupportedRecipeError(f"{name}: Artifacts must be a list")
    parsed = tuple(_artifact(a, name) for a in artifacts)
    if len({a.file_name for a in parsed}) != len(parsed):
        raise UnsupportedRecipeError(f"{name}: artifact file names must be unique within a manifest")
    return ComponentPlan(
        name=name,
        version=str(recipe.get("ComponentVersion", "")),
        default_configuration={str(k): v for k, v in defaults.items()},
        dependencies=_dependencies(recipe.get("ComponentDependencies"), name),
        artifacts=parsed,
        setenv=_string_map(lifecycle.get("Setenv"), name, "Lifecycle.Setenv"),
        install=_step(lifecycle.get("Install"), name, "Install"),
        run=_step(lifecycle.get("Run"), name, "Run"),
    )
