"""In-memory control plane and artifact store, and a tiny real component to run."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.recipe import DevicePlatform
from device.runner import DeviceRunner, LocalPolicy
from standins.greengrass_fake.state import InstalledComponentReport


def digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


@dataclass
class StatusReport:
    deployment_id: str
    status: str
    components: dict[str, str]
    reason: str | None


@dataclass
class FakeControlPlane:
    """Records every report, exactly as a nucleus would send it."""

    deployments: list[dict[str, Any]]
    recipes: dict[tuple[str, str], dict[str, Any]]
    statuses: list[StatusReport] = field(default_factory=list)
    periodic: list[dict[str, str]] = field(default_factory=list)

    def desired_deployments(self, thing_name: str) -> list[dict[str, Any]]:
        assert thing_name == "gw-01"
        return self.deployments

    def recipe(self, name: str, version: str) -> dict[str, Any]:
        return self.recipes[(name, version)]

    def report_device_status(
        self,
        thing_name: str,
        deployment_id: str,
        status: str,
        installed_components: Sequence[InstalledComponentReport] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        comps = {c.name: c.lifecycle_state for c in installed_components or []}
        self.statuses.append(StatusReport(deployment_id, status, comps, reason))

    def report_installed_components(
        self, thing_name: str, installed_components: Sequence[InstalledComponentReport]
    ) -> None:
        self.periodic.append({c.name: c.lifecycle_state for c in installed_components})


@dataclass
class MemoryStore:
    objects: dict[str, bytes]

    def get(self, uri: str) -> bytes:
        return self.objects[uri]


TOY_MAIN = """
import json, os, sys
config = json.load(open(os.environ["EDGEML_LOCAL_CONFIG_FILE"]))
print(json.dumps({"argv": sys.argv[1:], "greeting": config["greeting"],
                  "thing": os.environ["AWS_IOT_THING_NAME"], "cwd": os.getcwd(),
                  "phase_env": os.environ.get("TOY_PHASE")}))
"""


def toy_recipe(
    *, run: object = None, install: object = None, digest_of: bytes | None = None, **extra: Any
) -> dict[str, Any]:
    artifact: dict[str, Any] = {"URI": "s3://bucket/toy/1.0.0/toy.zip", "Unarchive": "ZIP"}
    if digest_of is not None:
        artifact["Digest"] = digest(digest_of)
        artifact["Algorithm"] = "SHA-256"
    lifecycle: dict[str, Any] = {
        "Run": run
        if run is not None
        else {
            "Script": "exec python3 {artifacts:decompressedPath}/toy/main.py '{configuration:/greeting}' "
            "{configuration:/count} {iot:thingName}",
            "Setenv": {"TOY_PHASE": "run in {work:path}"},
        }
    }
    if install is not None:
        lifecycle["Install"] = install
    recipe: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Toy",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"greeting": "hello", "count": 3}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": lifecycle, "Artifacts": [artifact]}],
    }
    recipe.update(extra)
    return recipe


def toy_plane(recipe: dict[str, Any], merge: dict[str, Any] | None = None) -> FakeControlPlane:
    return FakeControlPlane(
        deployments=[
            {
                "deployment_id": "dep-1",
                "created": 1.0,
                "components": {"com.example.Toy": {"version": "1.0.0", "merge": merge, "reset": []}},
            }
        ],
        recipes={("com.example.Toy", "1.0.0"): recipe},
    )


def toy_store() -> MemoryStore:
    return MemoryStore({"s3://bucket/toy/1.0.0/toy.zip": zip_bytes({"main.py": TOY_MAIN})})


AMD64 = DevicePlatform("linux", "amd64")


def local_runner(
    root: Path, plane: FakeControlPlane, store: MemoryStore | None = None, **policy: Any
) -> DeviceRunner:
    """A runner for thing gw-01 on linux/amd64 under ``root``, against the given plane and store."""
    return DeviceRunner(
        thing_name="gw-01",
        root=root,
        control=plane,
        store=store if store is not None else toy_store(),
        policy=LocalPolicy(**policy),
        device_platform=AMD64,
    )
