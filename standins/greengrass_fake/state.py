"""The in-memory Greengrass v2 control plane: components, deployments, core devices, tags.

`GreengrassV2Fake.handle(operation, params)` takes and returns the same values a boto3 caller passes
and receives (bytes for blobs, timezone-aware datetimes for timestamps). Every call is checked against
the botocore service model on the way in and on the way out, so the fake can neither accept what AWS
would refuse nor answer what AWS could not.

The device side (what a nucleus would report) is plain Python: `register_core_device`,
`report_device_status`, `report_installed_components`, and `desired_deployments` for a local runner.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.model import OperationModel, ServiceModel

from standins.greengrass_fake.errors import (
    ConflictError,
    ContractViolationError,
    NotImplementedByFakeError,
    ResourceNotFoundError,
    UnknownOperationError,
    ValidationError,
)
from standins.greengrass_fake.recipe import RECIPE_FORMAT_VERSION, Recipe, parse_recipe, render_recipe
from standins.greengrass_fake.semver import SemVer
from standins.greengrass_fake.shapes import load_service_model, validate_input, validate_output

Params = Mapping[str, Any]
Result = dict[str, Any]

DEFAULT_PAGE_SIZE = 50
EXECUTION_STATUSES = frozenset(
    {"IN_PROGRESS", "QUEUED", "FAILED", "COMPLETED", "TIMED_OUT", "CANCELED", "REJECTED", "SUCCEEDED"}
)
LIFECYCLE_STATES = frozenset(
    {"NEW", "INSTALLED", "STARTING", "RUNNING", "STOPPING", "ERRORED", "BROKEN", "FINISHED"}
)
_UNHEALTHY_STATES = frozenset({"ERRORED", "BROKEN"})
_SUCCEEDED = frozenset({"SUCCEEDED", "COMPLETED"})
_FAILED = frozenset({"FAILED", "REJECTED", "TIMED_OUT"})
# Public components (the nucleus, CLI, stream manager...) live in the AWS-owned catalogue, which this
# fake does not hold; deployments may name them at any version.
PUBLIC_COMPONENT_PREFIX = "aws.greengrass."
_TARGET_ARN = re.compile(r"^arn:[^:]*:iot:[^:]*:[0-9]+:(thing|thinggroup)/(.+)$")
_LAMBDA_ARN = re.compile(r"^arn:[^:]*:lambda:[^:]*:[0-9]+:function:([^:]+):([^:]+)$")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class InstalledComponentReport:
    """One component as a nucleus reports it (the `InstalledComponent` shape, minus timestamps)."""

    name: str
    version: str
    lifecycle_state: str = "RUNNING"
    is_root: bool = True
    details: str | None = None
    status_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ComponentSpec:
    """One component of a deployment, with `configurationUpdate.merge` already parsed."""

    version: str
    merge: dict[str, Any] | None = None
    reset: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as a local device runner needs it."""

    deployment_id: str
    target_arn: str
    revision_id: str
    deployment_name: str | None
    status: str
    is_latest_for_target: bool
    created: dt.datetime
    components: dict[str, ComponentSpec]
    failure_handling_policy: str
    # deploymentPolicies.configurationValidationPolicy.timeoutInSeconds (service default 30).
    configuration_validation_timeout_s: int = 30


@dataclass
class _ComponentVersion:
    arn: str
    recipe: Recipe
    created: dt.datetime


@dataclass
class _Deployment:
    deployment_id: str
    target_arn: str
    revision_id: str
    name: str | None
    components: dict[str, Any]
    policies: dict[str, Any]
    job_configuration: dict[str, Any]
    parent_target_arn: str | None
    created: dt.datetime
    sequence: int
    iot_job_id: str
    iot_job_arn: str
    status: str = "ACTIVE"
    is_latest: bool = True


@dataclass
class _EffectiveDeployment:
    deployment_id: str
    target_arn: str
    status: str
    created: dt.datetime
    modified: dt.datetime
    reason: str | None = None
    error_stack: tuple[str, ...] = ()
    error_types: tuple[str, ...] = ()


@dataclass
class _InstalledComponent:
    report: InstalledComponentReport
    last_status_change: dt.datetime
    last_reported: dt.datetime
    last_installation_source: str | None


@dataclass
class _CoreDevice:
    thing_name: str
    core_version: str
    platform: str
    architecture: str
    runtime: str
    status: str
    last_status_update: dt.datetime
    effective: dict[str, _EffectiveDeployment] = field(default_factory=dict)
    installed: dict[str, _InstalledComponent] = field(default_factory=dict)


def _not_found(kind: str, resource_id: str, message: str | None = None) -> ResourceNotFoundError:
    return ResourceNotFoundError(
        message or f"{kind} {resource_id} not found", resource_id=resource_id, resource_type=kind
    )


class GreengrassV2Fake:
    """The pure state machine behind the HTTP server; thread-safe, one lock around every call."""

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        s3_client: Any | None = None,
        iot_client: Any | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        service_model: ServiceModel | None = None,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self._s3 = s3_client
        self._iot = iot_client
        self._clock = clock
        self.service_model = service_model or load_service_model()
        self._lock = threading.RLock()
        self._components: dict[str, dict[str, _ComponentVersion]] = {}
        self._deployments: dict[str, _Deployment] = {}
        self._revisions: dict[str, int] = {}
        self._devices: dict[str, _CoreDevice] = {}
        self._groups: dict[str, set[str]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._idempotent: dict[tuple[str, str], Result] = {}
        self._sequence = 0
        self._handlers: dict[str, Callable[[Params], Result]] = {
            "CreateComponentVersion": self._create_component_version,
            "DescribeComponent": self._describe_component,
            "GetComponent": self._get_component,
            "ListComponentVersions": self._list_component_versions,
            "ListComponents": self._list_components,
            "DeleteComponent": self._delete_component,
            "CreateDeployment": self._create_deployment,
            "GetDeployment": self._get_deployment,
            "ListDeployments": self._list_deployments,
            "CancelDeployment": self._cancel_deployment,
            "DeleteDeployment": self._delete_deployment,
            "ListEffectiveDeployments": self._list_effective_deployments,
            "ListInstalledComponents": self._list_installed_components,
            "GetCoreDevice": self._get_core_device,
            "ListCoreDevices": self._list_core_devices,
            "DeleteCoreDevice": self._delete_core_device,
            "TagResource": self._tag_resource,
            "UntagResource": self._untag_resource,
            "ListTagsForResource": self._list_tags_for_resource,
        }

    # ------------------------------------------------------------------ API entry point

    @property
    def implemented_operations(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def operation_model(self, operation: str) -> OperationModel:
        if operation not in self.service_model.operation_names:
            raise UnknownOperationError(f"Greengrass v2 has no operation {operation}")
        return self.service_model.operation_model(operation)

    def handle(self, operation: str, params: Params) -> Result:
        """Run one API call; raises a `GreengrassFakeError` subclass exactly where AWS would fail."""
        model = self.operation_model(operation)
        errors = validate_input(model, params)
        if errors:
            raise ValidationError.from_fields(errors)
        handler = self._handlers.get(operation)
        if handler is None:
            raise NotImplementedByFakeError(f"{operation} is in the service model but not in this fake")
        with self._lock:
            result = handler(params)
        problems = validate_output(model, result)
        if problems:
            detail = "; ".join(p.message for p in problems)
            raise ContractViolationError(f"fake produced an invalid {operation} response: {detail}")
        return result

    # ------------------------------------------------------------------ ARNs

    def component_arn(self, name: str) -> str:
        return f"arn:aws:greengrass:{self.region}:{self.account_id}:components:{name}"

    def component_version_arn(self, name: str, version: str) -> str:
        return f"{self.component_arn(name)}:versions:{version}"

    def deployment_arn(self, deployment_id: str) -> str:
        return f"arn:aws:greengrass:{self.region}:{self.account_id}:deployments:{deployment_id}"

    def core_device_arn(self, thing_name: str) -> str:
        return f"arn:aws:greengrass:{self.region}:{self.account_id}:coreDevices:{thing_name}"

    def thing_arn(self, thing_name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account_id}:thing/{thing_name}"

    def thing_group_arn(self, group_name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account_id}:thinggroup/{group_name}"

    # ------------------------------------------------------------------ helpers

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _page(self, items: Sequence[Result], params: Params, key: str) -> Result:
        size = int(params.get("maxResults") or DEFAULT_PAGE_SIZE)
        token = params.get("nextToken")
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(str(token).encode("ascii")).decode("ascii"))
            except (ValueError, UnicodeError) as exc:
                raise ValidationError(f"Invalid nextToken: {token}", reason="OTHER") from exc
            if start < 0 or start > len(items):
                raise ValidationError(f"Invalid nextToken: {token}", reason="OTHER")
        end = start + size
        page: Result = {key: list(items[start:end])}
        if end < len(items):
            page["nextToken"] = base64.urlsafe_b64encode(str(end).encode("ascii")).decode("ascii")
        return page

    def _remember(self, operation: str, params: Params, compute: Callable[[], Result]) -> Result:
        """`clientToken` idempotency: a retried call gets the first answer, not a ConflictException."""
        token = params.get("clientToken")
        if token and (operation, token) in self._idempotent:
            return dict(self._idempotent[(operation, token)])
        result = compute()
        if token:
            self._idempotent[(operation, token)] = dict(result)
        return result

    def _split_version_arn(self, arn: str) -> tuple[str, str]:
        prefix = f"arn:aws:greengrass:{self.region}:{self.account_id}:components:"
        if not arn.startswith(prefix) or ":versions:" not in arn:
            raise _not_found("ComponentVersion", arn)
        name, version = arn[len(prefix) :].rsplit(":versions:", 1)
        return name, version

    def _component_version(self, arn: str) -> _ComponentVersion:
        name, version = self._split_version_arn(arn)
        record = self._components.get(name, {}).get(version)
        if record is None:
            raise _not_found("ComponentVersion", arn, f"Component {name} version {version} not found")
        return record

    @staticmethod
    def _target(target_arn: str) -> tuple[str, str]:
        match = _TARGET_ARN.match(target_arn)
        if match is None:  # the shape's pattern already refused it; kept for the type checker
            raise ValidationError(f"Invalid targetArn: {target_arn}")
        return match.group(1), match.group(2)

    def _tags_out(self, arn: str) -> Result:
        tags = self._tags.get(arn)
        return {"tags": dict(tags)} if tags else {}

    @staticmethod
    def _check_tags(tags: Mapping[str, str]) -> None:
        reserved = sorted(k for k in tags if k.lower().startswith("aws:"))
        if reserved:
            raise ValidationError(f"Tag keys with the prefix aws: are reserved: {', '.join(reserved)}")

    # ------------------------------------------------------------------ components

    def _create_component_version(self, params: Params) -> Result:
        return self._remember("CreateComponentVersion", params, lambda: self._new_component_version(params))

    def _new_component_version(self, params: Params) -> Result:
        raw = params.get("inlineRecipe")
        lambda_source = params.get("lambdaFunction")
        if (raw is None) == (lambda_source is None):
            raise ValidationError("Specify exactly one of inlineRecipe or lambdaFunction", reason="OTHER")
        if lambda_source is not None:
            recipe = self._lambda_recipe(lambda_source)
        elif isinstance(raw, str):
            recipe = parse_recipe(raw.encode("utf-8"))
        elif isinstance(raw, bytes | bytearray):
            recipe = parse_recipe(bytes(raw))
        else:  # the input shape check lets only str and bytes through
            raise ValidationError("inlineRecipe must be bytes")
        arn = self.component_version_arn(recipe.name, recipe.version)
        versions = self._components.setdefault(recipe.name, {})
        if recipe.version in versions:
            raise ConflictError(
                f"Component {recipe.name} version {recipe.version} already exists",
                resource_id=arn,
                resource_type="ComponentVersion",
            )
        tags = dict(params.get("tags") or {})
        self._check_tags(tags)
        recipe = self._with_digests(recipe)
        created = self._clock()
        versions[recipe.version] = _ComponentVersion(arn=arn, recipe=recipe, created=created)
        if tags:
            self._tags[arn] = tags
        return {
            "arn": arn,
            "componentName": recipe.name,
            "componentVersion": recipe.version,
            "creationTimestamp": created,
            "status": self._component_status(),
        }

    @staticmethod
    def _component_status() -> Result:
        # The fake processes synchronously, so a created version is DEPLOYABLE at once.
        return {"componentState": "DEPLOYABLE", "message": "NONE", "errors": {}, "vendorGuidance": "ACTIVE"}

    def _lambda_recipe(self, source: Mapping[str, Any]) -> Recipe:
        match = _LAMBDA_ARN.match(str(source["lambdaArn"]))
        if match is None or match.group(2) == "$LATEST":
            raise ValidationError("lambdaArn must be a Lambda function version ARN (not $LATEST)")
        function_name, qualifier = match.groups()
        version = source.get("componentVersion") or (f"{qualifier}.0.0" if qualifier.isdigit() else None)
        if version is None:
            raise ValidationError("componentVersion is required when the Lambda qualifier is an alias")
        document = {
            "RecipeFormatVersion": RECIPE_FORMAT_VERSION,
            "ComponentName": source.get("componentName") or function_name,
            "ComponentVersion": version,
            "ComponentType": "aws.greengrass.lambda",
            "ComponentSource": source["lambdaArn"],
            "Manifests": [
                {"Platform": dict(p.get("attributes") or {}), "Name": p.get("name")}
                for p in source.get("componentPlatforms") or []
            ],
        }
        return parse_recipe(json.dumps(document).encode("utf-8"))

    def _with_digests(self, recipe: Recipe) -> Recipe:
        """Compute `Digest`/`Algorithm` for every s3:// artifact, as the service does at create time."""
        s3_refs = [ref for ref in recipe.artifacts if ref.uri.startswith("s3://")]
        if self._s3 is None or not s3_refs:
            return recipe  # without an S3 client the fake cannot see artifacts: accept them unchecked
        document = json.loads(json.dumps(recipe.document))
        for ref in s3_refs:
            bucket, _, key = ref.uri[len("s3://") :].partition("/")
            digest = hashlib.sha256()
            try:
                body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
                for chunk in body.iter_chunks(chunk_size=1 << 20):
                    digest.update(chunk)
            except (ClientError, BotoCoreError) as exc:
                raise ValidationError(
                    f"Failed to process artifact {ref.uri} of {recipe.name}-{recipe.version}: "
                    "Specified artifact resource cannot be accessed",
                    reason="OTHER",
                ) from exc
            artifact = document["Manifests"][ref.manifest_index]["Artifacts"][ref.artifact_index]
            artifact["Digest"] = base64.b64encode(digest.digest()).decode("ascii")
            artifact["Algorithm"] = "SHA-256"
        return Recipe(
            name=recipe.name,
            version=recipe.version,
            description=recipe.description,
            publisher=recipe.publisher,
            platforms=recipe.platforms,
            artifacts=recipe.artifacts,
            document=document,
        )

    def _describe_component(self, params: Params) -> Result:
        record = self._component_version(params["arn"])
        recipe = record.recipe
        result: Result = {
            "arn": record.arn,
            "componentName": recipe.name,
            "componentVersion": recipe.version,
            "creationTimestamp": record.created,
            "status": self._component_status(),
            "platforms": [dict(p) for p in recipe.platforms],
            **self._tags_out(record.arn),
        }
        if recipe.publisher:
            result["publisher"] = recipe.publisher
        if recipe.description:
            result["description"] = recipe.description
        return result

    def _get_component(self, params: Params) -> Result:
        record = self._component_version(params["arn"])
        output_format = params.get("recipeOutputFormat") or "JSON"
        return {
            "recipeOutputFormat": output_format,
            "recipe": render_recipe(record.recipe.document, output_format),
            **self._tags_out(record.arn),
        }

    def _sorted_versions(self, name: str) -> list[_ComponentVersion]:
        versions = self._components.get(name, {})
        return [versions[v] for v in sorted(versions, key=SemVer, reverse=True)]

    def _list_component_versions(self, params: Params) -> Result:
        arn = str(params["arn"])
        prefix = f"arn:aws:greengrass:{self.region}:{self.account_id}:components:"
        name = arn[len(prefix) :] if arn.startswith(prefix) else ""
        records = self._sorted_versions(name)
        if not records:
            raise _not_found("Component", arn)
        items = [{"componentName": name, "componentVersion": r.recipe.version, "arn": r.arn} for r in records]
        return self._page(items, params, "componentVersions")

    def _list_components(self, params: Params) -> Result:
        if params.get("scope") == "PUBLIC":
            return self._page([], params, "components")
        items = []
        for name in sorted(self._components):
            records = self._sorted_versions(name)
            if not records:
                continue
            latest = records[0]
            latest_out: Result = {
                "arn": latest.arn,
                "componentVersion": latest.recipe.version,
                "creationTimestamp": latest.created,
                "platforms": [dict(p) for p in latest.recipe.platforms],
            }
            if latest.recipe.description:
                latest_out["description"] = latest.recipe.description
            if latest.recipe.publisher:
                latest_out["publisher"] = latest.recipe.publisher
            items.append(
                {"arn": self.component_arn(name), "componentName": name, "latestVersion": latest_out}
            )
        return self._page(items, params, "components")

    def _delete_component(self, params: Params) -> Result:
        # Deployments that still name this version are left as they are: on devices they then fail.
        record = self._component_version(params["arn"])
        name, version = self._split_version_arn(record.arn)
        del self._components[name][version]
        if not self._components[name]:
            del self._components[name]
        self._tags.pop(record.arn, None)
        return {}

    # ------------------------------------------------------------------ deployments

    def _create_deployment(self, params: Params) -> Result:
        return self._remember("CreateDeployment", params, lambda: self._new_deployment(params))

    def _new_deployment(self, params: Params) -> Result:
        target_arn = str(params["targetArn"])
        kind, _ = self._target(target_arn)
        parent = params.get("parentTargetArn")
        if parent is not None and kind != "thinggroup":
            raise ValidationError("A subdeployment (parentTargetArn) must target a thing group")
        components = json.loads(json.dumps(params.get("components") or {}))
        for name, spec in components.items():
            self._check_component_spec(name, spec)
        tags = dict(params.get("tags") or {})
        self._check_tags(tags)

        for previous in self._deployments.values():
            if previous.target_arn == target_arn and previous.is_latest:
                previous.is_latest = False
                if previous.status == "ACTIVE":
                    previous.status = "INACTIVE"
        revision = self._revisions.get(target_arn, 0) + 1
        self._revisions[target_arn] = revision
        deployment_id = str(uuid.uuid4())
        job_id = str(uuid.uuid4())
        deployment = _Deployment(
            deployment_id=deployment_id,
            target_arn=target_arn,
            revision_id=str(revision),
            name=params.get("deploymentName"),
            components=components,
            policies=self._policies_with_defaults(params.get("deploymentPolicies") or {}),
            job_configuration=json.loads(json.dumps(params.get("iotJobConfiguration") or {})),
            parent_target_arn=parent,
            created=self._clock(),
            sequence=self._next_sequence(),
            iot_job_id=job_id,
            iot_job_arn=f"arn:aws:iot:{self.region}:{self.account_id}:job/{job_id}",
        )
        self._deployments[deployment_id] = deployment
        if tags:
            self._tags[self.deployment_arn(deployment_id)] = tags
        for thing_name in list(self._devices):
            self._sync_effective(thing_name)
        return {"deploymentId": deployment_id, "iotJobId": job_id, "iotJobArn": deployment.iot_job_arn}

    def _check_component_spec(self, name: str, spec: Mapping[str, Any]) -> None:
        version = str(spec["componentVersion"])
        if not name.startswith(PUBLIC_COMPONENT_PREFIX) and version not in self._components.get(name, {}):
            raise _not_found(
                "ComponentVersion",
                self.component_version_arn(name, version),
                f"Component {name} version {version} not found",
            )
        update = spec.get("configurationUpdate") or {}
        merge = update.get("merge")
        if merge is not None:
            try:
                parsed = json.loads(merge)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    f"components.{name}.configurationUpdate.merge is not valid JSON: {exc}"
                ) from exc
            if not isinstance(parsed, dict):
                raise ValidationError(f"components.{name}.configurationUpdate.merge must be a JSON object")
        for pointer in update.get("reset") or []:
            if pointer and not pointer.startswith("/"):
                raise ValidationError(
                    f"components.{name}.configurationUpdate.reset entry {pointer!r} is not a JSON pointer"
                )

    @staticmethod
    def _policies_with_defaults(policies: Mapping[str, Any]) -> Result:
        # GetDeployment reports the service defaults for whatever the caller left out.
        update = {
            "timeoutInSeconds": 60,
            "action": "NOTIFY_COMPONENTS",
            **policies.get("componentUpdatePolicy", {}),
        }
        validation = {"timeoutInSeconds": 30, **policies.get("configurationValidationPolicy", {})}
        return {
            "failureHandlingPolicy": policies.get("failureHandlingPolicy", "ROLLBACK"),
            "componentUpdatePolicy": update,
            "configurationValidationPolicy": validation,
        }

    def _deployment(self, deployment_id: str) -> _Deployment:
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            raise _not_found("Deployment", deployment_id)
        return deployment

    def _get_deployment(self, params: Params) -> Result:
        d = self._deployment(str(params["deploymentId"]))
        result: Result = {
            "targetArn": d.target_arn,
            "revisionId": d.revision_id,
            "deploymentId": d.deployment_id,
            "deploymentStatus": d.status,
            "iotJobId": d.iot_job_id,
            "iotJobArn": d.iot_job_arn,
            "components": json.loads(json.dumps(d.components)),
            "deploymentPolicies": json.loads(json.dumps(d.policies)),
            "iotJobConfiguration": json.loads(json.dumps(d.job_configuration)),
            "creationTimestamp": d.created,
            "isLatestForTarget": d.is_latest,
            **self._tags_out(self.deployment_arn(d.deployment_id)),
        }
        if d.name is not None:
            result["deploymentName"] = d.name
        if d.parent_target_arn is not None:
            result["parentTargetArn"] = d.parent_target_arn
        return result

    @staticmethod
    def _deployment_summary(d: _Deployment) -> Result:
        item: Result = {
            "targetArn": d.target_arn,
            "revisionId": d.revision_id,
            "deploymentId": d.deployment_id,
            "creationTimestamp": d.created,
            "deploymentStatus": d.status,
            "isLatestForTarget": d.is_latest,
        }
        if d.name:
            item["deploymentName"] = d.name
        if d.parent_target_arn is not None:
            item["parentTargetArn"] = d.parent_target_arn
        return item

    def _list_deployments(self, params: Params) -> Result:
        history = params.get("historyFilter") or "LATEST_ONLY"
        target = params.get("targetArn")
        parent = params.get("parentTargetArn")
        selected = [
            d
            for d in self._deployments.values()
            if (target is None or d.target_arn == target)
            and (parent is None or d.parent_target_arn == parent)
            and (history == "ALL" or d.is_latest)
        ]
        selected.sort(key=lambda d: d.sequence, reverse=True)
        return self._page([self._deployment_summary(d) for d in selected], params, "deployments")

    def _cancel_deployment(self, params: Params) -> Result:
        d = self._deployment(str(params["deploymentId"]))
        if d.status != "ACTIVE":
            raise ConflictError(
                f"Deployment {d.deployment_id} is {d.status} and cannot be canceled",
                resource_id=d.deployment_id,
                resource_type="Deployment",
            )
        d.status = "CANCELED"
        now = self._clock()
        # Devices that already started keep going: a deployment mid-flight on a nucleus is not stopped.
        for device in self._devices.values():
            record = device.effective.get(d.target_arn)
            if record is not None and record.deployment_id == d.deployment_id and record.status == "QUEUED":
                record.status = "CANCELED"
                record.modified = now
        return {"message": f"Deployment {d.deployment_id} canceled for devices that have not received it"}

    def _delete_deployment(self, params: Params) -> Result:
        d = self._deployment(str(params["deploymentId"]))
        if d.status == "ACTIVE":
            raise ConflictError(
                f"Deployment {d.deployment_id} is ACTIVE; cancel it before deleting it",
                resource_id=d.deployment_id,
                resource_type="Deployment",
            )
        del self._deployments[d.deployment_id]
        self._tags.pop(self.deployment_arn(d.deployment_id), None)
        return {}

    # ------------------------------------------------------------------ thing groups

    def set_thing_group_members(self, group_name: str, thing_names: Iterable[str]) -> None:
        """Declare a thing group's members (the fake does not know IoT unless given an `iot_client`)."""
        with self._lock:
            self._groups[group_name] = set(thing_names)
            for thing_name in list(self._devices):
                self._sync_effective(thing_name)

    def add_thing_to_group(self, group_name: str, thing_name: str) -> None:
        with self._lock:
            self._groups.setdefault(group_name, set()).add(thing_name)
            if thing_name in self._devices:
                self._sync_effective(thing_name)

    def groups_of_thing(self, thing_name: str) -> set[str]:
        with self._lock:
            groups = {g for g, members in self._groups.items() if thing_name in members}
        if self._iot is not None:
            groups |= _iot_groups_of_thing(self._iot, thing_name)
        return groups

    def things_in_group(self, group_name: str) -> set[str]:
        with self._lock:
            things = set(self._groups.get(group_name, set()))
        if self._iot is not None:
            things |= _iot_things_in_group(self._iot, group_name)
        return things

    def _deployments_for_thing(self, thing_name: str) -> list[_Deployment]:
        """The latest deployment of each target the thing belongs to (itself and its groups)."""
        groups = self.groups_of_thing(thing_name)
        latest = [
            d
            for d in self._deployments.values()
            if d.is_latest
            and (
                (self._target(d.target_arn) == ("thing", thing_name))
                or (self._target(d.target_arn)[0] == "thinggroup" and self._target(d.target_arn)[1] in groups)
            )
        ]
        return sorted(latest, key=lambda d: d.sequence)

    def _sync_effective(self, thing_name: str) -> None:
        device = self._devices[thing_name]
        now = self._clock()
        for d in self._deployments_for_thing(thing_name):
            current = device.effective.get(d.target_arn)
            if current is not None and current.deployment_id == d.deployment_id:
                continue
            status = "CANCELED" if d.status == "CANCELED" else "QUEUED"
            device.effective[d.target_arn] = _EffectiveDeployment(
                deployment_id=d.deployment_id,
                target_arn=d.target_arn,
                status=status,
                created=now,
                modified=now,
            )

    # ------------------------------------------------------------------ core devices (device side)

    def register_core_device(
        self,
        thing_name: str,
        *,
        core_version: str = "2.14.0",
        platform: str = "linux",
        architecture: str = "amd64",
        runtime: str = "aws_nucleus_classic",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """What a nucleus does on first contact: the core device appears, HEALTHY, with no components."""
        with self._lock:
            if thing_name not in self._devices:
                self._devices[thing_name] = _CoreDevice(
                    thing_name=thing_name,
                    core_version=core_version,
                    platform=platform,
                    architecture=architecture,
                    runtime=runtime,
                    status="HEALTHY",
                    last_status_update=self._clock(),
                )
            if tags:
                self._check_tags(tags)
                self._tags.setdefault(self.core_device_arn(thing_name), {}).update(tags)
            self._sync_effective(thing_name)

    def desired_deployments(self, thing_name: str) -> list[DeploymentView]:
        """What a nucleus would fetch: the latest, not canceled deployment of each of its targets."""
        with self._lock:
            return [self._view(d) for d in self._deployments_for_thing(thing_name) if d.status != "CANCELED"]

    def deployment(self, deployment_id: str) -> DeploymentView:
        with self._lock:
            return self._view(self._deployment(deployment_id))

    def recipe(self, name: str, version: str) -> dict[str, Any]:
        """The stored recipe document, including the digests computed at create time."""
        with self._lock:
            record = self._component_version(self.component_version_arn(name, version))
            return json.loads(json.dumps(record.recipe.document))  # type: ignore[no-any-return]

    def _view(self, d: _Deployment) -> DeploymentView:
        components = {}
        for name, spec in d.components.items():
            update = spec.get("configurationUpdate") or {}
            merge = update.get("merge")
            components[name] = ComponentSpec(
                version=spec["componentVersion"],
                merge=json.loads(merge) if merge is not None else None,
                reset=tuple(update.get("reset") or ()),
            )
        return DeploymentView(
            deployment_id=d.deployment_id,
            target_arn=d.target_arn,
            revision_id=d.revision_id,
            deployment_name=d.name,
            status=d.status,
            is_latest_for_target=d.is_latest,
            created=d.created,
            components=components,
            failure_handling_policy=d.policies["failureHandlingPolicy"],
            configuration_validation_timeout_s=int(
                d.policies["configurationValidationPolicy"]["timeoutInSeconds"]
            ),
        )

    def report_device_status(
        self,
        thing_name: str,
        deployment_id: str,
        status: str,
        installed_components: Sequence[InstalledComponentReport] | None = None,
        *,
        reason: str | None = None,
        error_stack: Sequence[str] = (),
        error_types: Sequence[str] = (),
    ) -> None:
        """A nucleus reporting one deployment's execution on one device (plus, optionally, its components).

        An unknown device is registered on the spot, as the service does on a nucleus's first report.
        """
        if status not in EXECUTION_STATUSES:
            raise ValidationError(f"Unknown execution status {status!r}; one of {sorted(EXECUTION_STATUSES)}")
        with self._lock:
            deployment = self._deployment(deployment_id)
            if thing_name not in self._devices:
                self.register_core_device(thing_name)
            device = self._devices[thing_name]
            now = self._clock()
            record = device.effective.get(deployment.target_arn)
            if record is None or record.deployment_id != deployment_id:
                record = _EffectiveDeployment(deployment_id, deployment.target_arn, status, now, now)
                device.effective[deployment.target_arn] = record
            record.status = status
            record.modified = now
            record.reason = reason
            record.error_stack = tuple(error_stack)
            record.error_types = tuple(error_types)
            if deployment.status == "ACTIVE" and self._target(deployment.target_arn)[0] == "thing":
                # A thing's deployment has one job execution, so it ends with it; a group's job is
                # continuous and stays ACTIVE.
                if status in _SUCCEEDED:
                    deployment.status = "COMPLETED"
                elif status in _FAILED:
                    deployment.status = "FAILED"
            if installed_components is not None:
                self._set_installed(device, installed_components, source=deployment_id)
            device.last_status_update = now

    def report_installed_components(
        self, thing_name: str, installed_components: Sequence[InstalledComponentReport]
    ) -> None:
        """A periodic (non-deployment) status report: component states and device health only."""
        with self._lock:
            if thing_name not in self._devices:
                self.register_core_device(thing_name)
            device = self._devices[thing_name]
            self._set_installed(device, installed_components, source=None)
            device.last_status_update = self._clock()

    def _set_installed(
        self, device: _CoreDevice, reports: Sequence[InstalledComponentReport], *, source: str | None
    ) -> None:
        now = self._clock()
        for report in reports:
            if report.lifecycle_state not in LIFECYCLE_STATES:
                raise ValidationError(
                    f"Unknown lifecycle state {report.lifecycle_state!r}; one of {sorted(LIFECYCLE_STATES)}"
                )
        installed: dict[str, _InstalledComponent] = {}
        for report in reports:
            before = device.installed.get(report.name)
            changed = before is None or before.report.lifecycle_state != report.lifecycle_state
            new_version = before is None or before.report.version != report.version
            installed[report.name] = _InstalledComponent(
                report=report,
                last_status_change=now if changed or before is None else before.last_status_change,
                last_reported=now,
                last_installation_source=(
                    source if new_version or before is None else before.last_installation_source
                ),
            )
        device.installed = installed
        unhealthy = any(c.report.lifecycle_state in _UNHEALTHY_STATES for c in installed.values())
        device.status = "UNHEALTHY" if unhealthy else "HEALTHY"

    # ------------------------------------------------------------------ core devices (API side)

    def _device(self, thing_name: str) -> _CoreDevice:
        device = self._devices.get(thing_name)
        if device is None:
            raise _not_found("CoreDevice", thing_name, f"Core device {thing_name} not found")
        return device

    def _list_effective_deployments(self, params: Params) -> Result:
        thing_name = str(params["coreDeviceThingName"])
        device = self._device(thing_name)
        self._sync_effective(thing_name)
        items = []
        for record in sorted(device.effective.values(), key=lambda r: r.modified, reverse=True):
            d = self._deployments.get(record.deployment_id)
            item: Result = {
                "deploymentId": record.deployment_id,
                "deploymentName": (d.name if d is not None else None) or "",
                "targetArn": record.target_arn,
                "coreDeviceExecutionStatus": record.status,
                "creationTimestamp": record.created,
                "modifiedTimestamp": record.modified,
            }
            if d is not None:
                item["iotJobId"] = d.iot_job_id
                item["iotJobArn"] = d.iot_job_arn
            if record.reason:
                item["reason"] = record.reason
            if record.error_stack or record.error_types:
                item["statusDetails"] = {
                    "errorStack": list(record.error_stack),
                    "errorTypes": list(record.error_types),
                }
            items.append(item)
        return self._page(items, params, "effectiveDeployments")

    def _list_installed_components(self, params: Params) -> Result:
        device = self._device(str(params["coreDeviceThingName"]))
        only_root = (params.get("topologyFilter") or "ROOT") == "ROOT"
        items = []
        for name in sorted(device.installed):
            c = device.installed[name]
            if only_root and not c.report.is_root:
                continue
            item: Result = {
                "componentName": c.report.name,
                "componentVersion": c.report.version,
                "lifecycleState": c.report.lifecycle_state,
                "isRoot": c.report.is_root,
                "lastStatusChangeTimestamp": c.last_status_change,
                "lastReportedTimestamp": c.last_reported,
            }
            if c.report.details:
                item["lifecycleStateDetails"] = c.report.details
            if c.last_installation_source:
                item["lastInstallationSource"] = c.last_installation_source
            if c.report.status_codes:
                item["lifecycleStatusCodes"] = list(c.report.status_codes)
            items.append(item)
        return self._page(items, params, "installedComponents")

    @staticmethod
    def _device_summary(device: _CoreDevice) -> Result:
        return {
            "coreDeviceThingName": device.thing_name,
            "status": device.status,
            "lastStatusUpdateTimestamp": device.last_status_update,
            "platform": device.platform,
            "architecture": device.architecture,
            "runtime": device.runtime,
        }

    def _get_core_device(self, params: Params) -> Result:
        device = self._device(str(params["coreDeviceThingName"]))
        return {
            **self._device_summary(device),
            "coreVersion": device.core_version,
            **self._tags_out(self.core_device_arn(device.thing_name)),
        }

    def _list_core_devices(self, params: Params) -> Result:
        members: set[str] | None = None
        group_arn = params.get("thingGroupArn")
        if group_arn is not None:
            members = self.things_in_group(self._target(str(group_arn))[1])
        devices = [
            d
            for name, d in sorted(self._devices.items())
            if (members is None or name in members)
            and (params.get("status") is None or d.status == params["status"])
            and (params.get("runtime") is None or d.runtime == params["runtime"])
        ]
        return self._page([self._device_summary(d) for d in devices], params, "coreDevices")

    def _delete_core_device(self, params: Params) -> Result:
        thing_name = str(params["coreDeviceThingName"])
        self._device(thing_name)
        del self._devices[thing_name]
        self._tags.pop(self.core_device_arn(thing_name), None)
        return {}

    # ------------------------------------------------------------------ tags

    def _resource_exists(self, arn: str) -> bool:
        prefix = f"arn:aws:greengrass:{self.region}:{self.account_id}:"
        if not arn.startswith(prefix):
            return False
        kind, _, rest = arn[len(prefix) :].partition(":")
        if kind == "components":
            name, sep, version = rest.rpartition(":versions:")
            return bool(sep) and version in self._components.get(name, {})
        if kind == "deployments":
            return rest in self._deployments
        return kind == "coreDevices" and rest in self._devices

    def _tagged_resource(self, arn: str) -> str:
        if not self._resource_exists(arn):
            raise _not_found("Resource", arn)
        return arn

    def _tag_resource(self, params: Params) -> Result:
        arn = self._tagged_resource(str(params["resourceArn"]))
        tags = dict(params["tags"])
        self._check_tags(tags)
        self._tags.setdefault(arn, {}).update(tags)
        return {}

    def _untag_resource(self, params: Params) -> Result:
        arn = self._tagged_resource(str(params["resourceArn"]))
        current = self._tags.get(arn, {})
        for key in params["tagKeys"]:
            current.pop(key, None)
        return {}

    def _list_tags_for_resource(self, params: Params) -> Result:
        return self._tags_out(self._tagged_resource(str(params["resourceArn"])))


def _iot_groups_of_thing(iot: Any, thing_name: str) -> set[str]:
    names: set[str] = set()
    kwargs: dict[str, Any] = {"thingName": thing_name}
    try:
        while True:
            page = iot.list_thing_groups_for_thing(**kwargs)
            names |= {g["groupName"] for g in page.get("thingGroups", [])}
            if not page.get("nextToken"):
                return names
            kwargs["nextToken"] = page["nextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return names  # a thing unknown to IoT belongs to no group
        raise


def _iot_things_in_group(iot: Any, group_name: str) -> set[str]:
    names: set[str] = set()
    kwargs: dict[str, Any] = {"thingGroupName": group_name, "recursive": True}
    try:
        while True:
            page = iot.list_things_in_thing_group(**kwargs)
            names |= set(page.get("things", []))
            if not page.get("nextToken"):
                return names
            kwargs["nextToken"] = page["nextToken"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return names
        raise
