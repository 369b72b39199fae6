"""In-memory stand-ins for the publisher's ports, for the pure core tests (no HTTP, no moto)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from lambdas.publisher.core import (
    ComponentStatus,
    ComponentVersionRef,
    Deployment,
    DeploymentRequest,
)
from lambdas.publisher.errors import ComponentVersionConflictError, ModelNotFoundError, ModelValidationError
from lambdas.publisher.versioning import SemVer

ARN_PREFIX = "arn:aws:greengrass:us-east-1:123456789012:components:"


@dataclass
class MemoryStore:
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    object_metadata: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    puts: list[tuple[str, str]] = field(default_factory=list)

    def read(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        if (bucket, key) not in self.objects:
            raise ModelNotFoundError(f"model object s3://{bucket}/{key} does not exist")
        data = self.objects[(bucket, key)]
        if len(data) > max_bytes:
            raise ModelValidationError(f"s3://{bucket}/{key} is {len(data)} bytes; the limit is {max_bytes}")
        return data

    def put_if_absent(
        self, bucket: str, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None
    ) -> bool:
        if (bucket, key) in self.objects:
            return False
        self.objects[(bucket, key)] = data
        self.object_metadata[(bucket, key)] = dict(metadata or {})
        self.puts.append((bucket, key))
        return True

    def metadata(self, bucket: str, key: str) -> Mapping[str, str]:
        if (bucket, key) not in self.objects:
            raise ModelNotFoundError(f"model object s3://{bucket}/{key} does not exist")
        return self.object_metadata.get((bucket, key), {})


@dataclass
class MemoryComponents:
    recipes: dict[str, bytes] = field(default_factory=dict)  # version ARN -> recipe
    # States reported by successive status() calls; the last one repeats.
    states: list[ComponentStatus] = field(default_factory=lambda: [ComponentStatus("DEPLOYABLE")])
    status_calls: int = 0
    # Versions another publisher creates just before our create() lands (to provoke a conflict).
    race: dict[str, bytes] = field(default_factory=dict)

    def list_versions(self, component_arn: str) -> list[ComponentVersionRef]:
        name = component_arn.removeprefix(ARN_PREFIX)
        refs = [
            ComponentVersionRef(name=name, version=arn.rsplit(":", 1)[1], arn=arn)
            for arn in self.recipes
            if arn.startswith(f"{component_arn}:versions:")
        ]
        return sorted(refs, key=lambda ref: SemVer.parse(ref.version), reverse=True)

    def get_recipe(self, version_arn: str) -> bytes:
        return self.recipes[version_arn]

    def create(self, recipe: bytes) -> ComponentVersionRef:
        self.recipes.update(self.race)
        self.race = {}
        document = json.loads(recipe)
        name, version = document["ComponentName"], document["ComponentVersion"]
        arn = f"{ARN_PREFIX}{name}:versions:{version}"
        if arn in self.recipes:
            raise ComponentVersionConflictError(f"Component {name} version {version} already exists")
        self.recipes[arn] = recipe
        return ComponentVersionRef(name=name, version=version, arn=arn)

    def status(self, version_arn: str) -> ComponentStatus:
        index = min(self.status_calls, len(self.states) - 1)
        self.status_calls += 1
        return self.states[index]


@dataclass
class MemoryDeployments:
    latest: Deployment | None = None
    created: list[DeploymentRequest] = field(default_factory=list)

    def latest_for_target(self, target_arn: str) -> Deployment | None:
        return self.latest if self.latest is not None and self.latest.target_arn == target_arn else None

    def create(self, request: DeploymentRequest) -> str:
        self.created.append(request)
        deployment_id = f"deployment-{len(self.created)}"
        self.latest = Deployment(
            deployment_id=deployment_id,
            target_arn=request.target_arn,
            name=request.name,
            components=dict(request.components),
            tags=dict(request.tags),
        )
        return deployment_id
