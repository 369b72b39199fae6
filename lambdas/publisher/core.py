"""Publish one model: validate → reuse or create a component version → wait → revise the deployment.

Pure orchestration over three small ports (model store, component registry, deployments); no AWS SDK
here. The order matters: everything that can refuse a model runs before anything is written, so a bad
event or a bad model changes nothing.

Two write-once copies (docs/contracts.md §2): the version-addressed ``models/<name>/<version>/model.onnx``
(training output and candidates) and, only for a model that is published, the component artifact
``components/<component>/<component version>/model.onnx``, the one prefix devices can read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol
from urllib.parse import quote, unquote

from lambdas.publisher.config import PublisherConfig, ThingGroupArn
from lambdas.publisher.errors import (
    ArtifactConflictError,
    ComponentVersionConflictError,
    GreengrassError,
    ModelValidationError,
)
from lambdas.publisher.events import (
    S3_EVENT_ORIGINS,
    ArtifactKind,
    PublishRequest,
    component_artifact_key,
    is_plain_segment,
    model_key,
)
from lambdas.publisher.recipe import (
    recipe_artifact_uris,
    recipe_json,
    recipe_model_sha256,
    render_model_recipe,
)
from lambdas.publisher.validation import ModelInfo, extract_model_from_archive, sha256_hex, validate_model
from lambdas.publisher.versioning import SemVer, next_version

MODEL_CONFIGURATION_KEY = "model"
DEPLOYABLE = "DEPLOYABLE"
_FAILED_STATES = frozenset({"FAILED", "DEPRECATED"})
# S3 user metadata (``x-amz-meta-edgeml-copied-from``) on the ``models/`` copy the publisher writes:
# the URI of the object it was copied from, percent-encoded because S3 metadata is ASCII.
COPIED_FROM_METADATA = "edgeml-copied-from"
_URI_SAFE = ":/"
# Versions whose artifact key an earlier, failed attempt left holding another model (see
# ``_claim_artifact_key``); more than this in a row is not an accident, and a person should look.
MAX_SKIPPED_VERSIONS = 5


# --- ports -------------------------------------------------------------------------------------------


class ModelStore(Protocol):
    def read(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; ``ModelNotFoundError`` if absent, ``ModelValidationError`` if too large."""
        ...

    def put_if_absent(
        self, bucket: str, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None
    ) -> bool:
        """Write the object (with user ``metadata``) unless the key exists. True if written, False if the
        key already existed."""
        ...

    def metadata(self, bucket: str, key: str) -> Mapping[str, str]:
        """The object's user metadata (empty if it has none); ``ModelNotFoundError`` if absent."""
        ...


@dataclass(frozen=True)
class ComponentVersionRef:
    name: str
    version: str
    arn: str


@dataclass(frozen=True)
class ComponentStatus:
    state: str
    message: str = ""
    errors: Mapping[str, str] = field(default_factory=dict)


class ComponentRegistry(Protocol):
    def list_versions(self, component_arn: str) -> list[ComponentVersionRef]:
        """Every version of the component, newest first (empty if the component does not exist)."""
        ...

    def get_recipe(self, version_arn: str) -> bytes:
        """The version's recipe as JSON bytes."""
        ...

    def create(self, recipe: bytes) -> ComponentVersionRef:
        """Create a component version; ``ComponentVersionConflictError`` if the version exists."""
        ...

    def status(self, version_arn: str) -> ComponentStatus: ...


@dataclass(frozen=True)
class ComponentDeployment:
    """One component's entry in a deployment. ``run_with`` is carried through untouched."""

    component_version: str
    configuration_merge: str | None = None
    configuration_reset: tuple[str, ...] | None = None
    run_with: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Deployment:
    """The parts of an existing deployment that a revision must keep."""

    deployment_id: str
    target_arn: str
    name: str | None
    components: Mapping[str, ComponentDeployment]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutPolicy:
    """How a model rollout behaves on the fleet (AWS-FACTS §2.3)."""

    # Per device: a failed deployment returns the device to its previous configuration.
    failure_handling: str = "ROLLBACK"
    # Components hear about the update first, so the detector can swap models between micro-batches.
    component_update_action: str = "NOTIFY_COMPONENTS"
    component_update_timeout_seconds: int = 60
    # Fleet-wide: stop sending the job to devices that have not run it once failures pass the threshold.
    abort_threshold_percentage: float = 10.0
    abort_min_executed_things: int = 1
    in_progress_timeout_minutes: int = 60
    # Job rollout rate (IoT jobExecutionsRolloutConfig): start at ``rollout_base_rate_per_minute`` devices
    # a minute, multiply by ``rollout_increment_factor`` each time ``rollout_rate_increase_after_succeeded``
    # more devices succeed, never above ``rollout_maximum_per_minute``. None: IoT's default (no pacing).
    rollout_base_rate_per_minute: int | None = None
    rollout_increment_factor: float = 2.0
    rollout_rate_increase_after_succeeded: int = 1
    rollout_maximum_per_minute: int | None = None


@dataclass(frozen=True)
class DeploymentRequest:
    target_arn: str
    name: str
    components: Mapping[str, ComponentDeployment]
    policy: RolloutPolicy
    tags: Mapping[str, str] = field(default_factory=dict)


class DeploymentService(Protocol):
    def latest_for_target(self, target_arn: str) -> Deployment | None: ...

    def create(self, request: DeploymentRequest) -> str:
        """Create (revise) the target's deployment; returns the new deployment id."""
        ...


# --- result ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    component_name: str
    component_version: str
    component_arn: str
    component_created: bool
    deployment_id: str
    deployment_created: bool
    target_arn: str
    # The version-addressed model (models/...) and the component's artifact, its copy under components/.
    model_uri: str
    artifact_uri: str
    model_sha256: str
    model_version: str
    # Versions passed over because their artifact key held another model but no such version existed.
    skipped_versions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class WaitPolicy:
    """Bounded polling for a new component version to become deployable."""

    max_tries: int = 30
    delay_seconds: float = 2.0


# --- orchestration -----------------------------------------------------------------------------------


def publish_model(
    request: PublishRequest,
    *,
    config: PublisherConfig,
    store: ModelStore,
    components: ComponentRegistry,
    deployments: DeploymentService,
    sleep: Callable[[float], None] = time.sleep,
    wait: WaitPolicy = WaitPolicy(),
    rollout: RolloutPolicy = RolloutPolicy(),
) -> PublishResult:
    """Publish the model named by ``request`` and deploy it to the configured thing group.

    Idempotent: publishing a model whose sha256 already has a component version reuses that version, and
    a deployment that already runs it is not revised again. So retries of the same event are safe.
    """
    data, model = load_and_validate(request, store=store, max_bytes=config.max_model_bytes)
    request = named_request(request, model)
    key = model_key(request.model_name, model.model_version)
    if request.bucket != config.model_bucket or request.key != key:
        put_write_once(
            store,
            config.model_bucket,
            key,
            data,
            model.sha256,
            max_bytes=config.max_model_bytes,
            metadata={COPIED_FROM_METADATA: quote(request.uri, safe=_URI_SAFE)},
        )

    component, created, skipped = _ensure_component_version(
        components,
        store=store,
        bucket=config.model_bucket,
        data=data,
        max_bytes=config.max_model_bytes,
        component_arn=component_arn(config.target, config.model_component_name),
        component_name=config.model_component_name,
        model=model,
    )
    wait_until_deployable(components, component, sleep=sleep, wait=wait)

    latest = deployments.latest_for_target(config.target.arn)
    plan = plan_deployment(
        latest,
        config=config,
        model_component=component,
        model_configuration=model_configuration(component, model),
        rollout=rollout,
    )
    if latest is not None and same_components(latest.components, plan.components):
        deployment_id, deployment_created = latest.deployment_id, False
    else:
        deployment_id, deployment_created = deployments.create(plan), True

    return PublishResult(
        component_name=component.name,
        component_version=component.version,
        component_arn=component.arn,
        component_created=created,
        deployment_id=deployment_id,
        deployment_created=deployment_created,
        target_arn=config.target.arn,
        model_uri=s3_uri(config.model_bucket, key),
        artifact_uri=s3_uri(config.model_bucket, component_artifact_key(component.name, component.version)),
        model_sha256=model.sha256,
        model_version=model.model_version,
        skipped_versions=skipped,
    )


def publisher_copy_source(request: PublishRequest, store: ModelStore) -> str | None:
    """The object the publisher copied ``request``'s model from, when the request is the S3 event of
    that copy; None for every other request.

    The publisher writes ``models/<name>/<version>/model.onnx`` itself for a SageMaker ``model.tar.gz``
    (or an ONNX at another key), and the bucket's ObjectCreated rule announces that write as a new model.
    The invocation that wrote it has published (or is publishing, and its retries will finish) that
    model, so the announcement is only an echo. The copy carries ``COPIED_FROM_METADATA``; models
    uploaded by anyone else do not.
    """
    if request.origin not in S3_EVENT_ORIGINS:
        return None
    source = store.metadata(request.bucket, request.key).get(COPIED_FROM_METADATA)
    return unquote(source) if source is not None else None


def load_and_validate(
    request: PublishRequest, *, store: ModelStore, max_bytes: int
) -> tuple[bytes, ModelInfo]:
    """The model's bytes (extracted from a SageMaker archive if need be) and what validation learned."""
    data = store.read(request.bucket, request.key, max_bytes=max_bytes)
    if request.kind is ArtifactKind.TARBALL:
        data = extract_model_from_archive(data, max_bytes=max_bytes)
    model = validate_model(data, max_bytes=max_bytes)
    if request.expected_model_version is not None and model.model_version != request.expected_model_version:
        raise ModelValidationError(
            f"model at {request.uri} declares model_version {model.model_version!r}, "
            f"but its key says {request.expected_model_version!r}"
        )
    named_request(request, model)  # refuses a name disagreement before anything is written
    return data, model


def named_request(request: PublishRequest, model: ModelInfo) -> PublishRequest:
    """``request`` with the model name its model gives, for a training job's artifact (``named_by_model``).

    The model's ``model_name`` metadata is what training was told to call it, so the version-addressed
    copy, the lineage record and the model agree even when the launch gave no ``model_name``
    hyperparameter (the publisher used to fall back to the job's name: every launch its own model). A
    hyperparameter that disagrees with the metadata (e.g. "1e3" against "1000.0", rewritten on the way
    into the container) is refused: which name was meant is for a person to say. A model key
    (``models/<name>/<version>/model.onnx``) that names the model otherwise than its metadata is refused
    the same way, so a model gets one name however it is published (``edgeml publish model`` names its
    key after the metadata). A model without the key (the contract does not require it) keeps the
    event's name. Other requests are returned as given.
    """
    name = model.model_name
    if not request.named_by_model:
        if name is not None and name != request.model_name:
            raise ModelValidationError(
                f"model at {request.uri} declares model_name {name!r}, but its key names it "
                f"{request.model_name!r}; nothing was published. Upload it under "
                f"{model_key(name, model.model_version)}"
            )
        return request
    if name is None:
        return replace(request, named_by_model=False)
    if not is_plain_segment(name):
        raise ModelValidationError(
            f"model at {request.uri} declares model_name {name!r}, which cannot be an S3 key segment "
            "(1-128 letters, digits, '.', '_' or '-')"
        )
    if request.declared_model_name is not None and request.declared_model_name != name:
        raise ModelValidationError(
            f"model at {request.uri} declares model_name {name!r}, but its training job "
            f"{request.training_job} has the model_name hyperparameter {request.declared_model_name!r}; "
            "nothing was published"
        )
    return replace(request, model_name=name, named_by_model=False)


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def put_write_once(
    store: ModelStore,
    bucket: str,
    key: str,
    data: bytes,
    sha256: str,
    *,
    max_bytes: int,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``data`` at ``key`` unless it is there already; ``ArtifactConflictError`` if other bytes are.

    Greengrass records each artifact's digest at create time: a key is written once, never overwritten.
    The same bytes already in place make a retry a no-op.
    """
    if store.put_if_absent(bucket, key, data, metadata=metadata):
        return
    existing = store.read(bucket, key, max_bytes=max_bytes)
    if sha256_hex(existing) != sha256:
        raise ArtifactConflictError(
            f"{s3_uri(bucket, key)} already holds a different model (sha256 {sha256_hex(existing)}); "
            "keys are written once"
        )


def component_arn(target: ThingGroupArn, component_name: str) -> str:
    """The (versionless) ARN of a private component in the target's account and region."""
    return f"arn:{target.partition}:greengrass:{target.region}:{target.account}:components:{component_name}"


def _ensure_component_version(
    components: ComponentRegistry,
    *,
    store: ModelStore,
    bucket: str,
    data: bytes,
    max_bytes: int,
    component_arn: str,
    component_name: str,
    model: ModelInfo,
) -> tuple[ComponentVersionRef, bool, tuple[str, ...]]:
    existing = components.list_versions(component_arn)
    found = find_version_with_sha256(components, existing, model.sha256, bucket=bucket)
    if found is not None:
        return found, False, ()
    version, artifact_key, skipped = _claim_artifact_key(
        store,
        bucket=bucket,
        data=data,
        max_bytes=max_bytes,
        component_name=component_name,
        sha256=model.sha256,
        first=next_version(ref.version for ref in existing),
    )
    recipe = render_model_recipe(
        component_name=component_name,
        component_version=version,
        model=model,
        artifact_uri=s3_uri(bucket, artifact_key),
    )
    try:
        return components.create(recipe_json(recipe)), True, skipped
    except ComponentVersionConflictError:
        # A concurrent invocation (S3 event and training event for the same model) took this version
        # first; if it published the same model, that version is ours too.
        latest = components.list_versions(component_arn)
        found = find_version_with_sha256(components, latest, model.sha256, bucket=bucket)
        if found is None:
            raise
        return found, False, skipped


def _claim_artifact_key(
    store: ModelStore,
    *,
    bucket: str,
    data: bytes,
    max_bytes: int,
    component_name: str,
    sha256: str,
    first: str,
) -> tuple[str, str, tuple[str, ...]]:
    """The component version to create, its artifact key (now holding ``data``) and the versions skipped.

    Before the create: Greengrass reads the artifact to record its digest. ``first`` is newer than every
    existing component version, so other bytes already at its key were left by an attempt that never
    created that version (it failed for good after the write, or is still running and will take that
    version). The number is taken either way, never the key rewritten: the next patch is tried, up to
    ``MAX_SKIPPED_VERSIONS`` of them, so one orphaned artifact cannot block every later model.
    """
    version = first
    skipped: list[str] = []
    while True:
        artifact_key = component_artifact_key(component_name, version)
        try:
            put_write_once(store, bucket, artifact_key, data, sha256, max_bytes=max_bytes)
        except ArtifactConflictError as exc:
            skipped.append(version)
            if len(skipped) > MAX_SKIPPED_VERSIONS:
                raise ArtifactConflictError(
                    f"the artifact keys of component versions {', '.join(skipped)} of {component_name} all "
                    f"hold other models, yet none of those versions exists: {exc}"
                ) from exc
            version = str(SemVer.parse(version).next_patch())
            continue
        return version, artifact_key, tuple(skipped)


def find_version_with_sha256(
    components: ComponentRegistry, versions: Sequence[ComponentVersionRef], sha256: str, *, bucket: str
) -> ComponentVersionRef | None:
    """The newest version whose recipe records this model sha256 and downloads it from its own
    ``components/`` key in ``bucket``, if any.

    A version whose artifact is elsewhere (an older layout under ``models/``) is not reused: the devices'
    token-exchange role cannot read it, so deploying it would fail on every device.
    """
    for ref in versions:
        recipe = components.get_recipe(ref.arn)
        expected = s3_uri(bucket, component_artifact_key(ref.name, ref.version))
        if recipe_model_sha256(recipe) == sha256 and recipe_artifact_uris(recipe) == [expected]:
            return ref
    return None


def wait_until_deployable(
    components: ComponentRegistry,
    component: ComponentVersionRef,
    *,
    sleep: Callable[[float], None],
    wait: WaitPolicy,
) -> None:
    status = ComponentStatus(state="UNKNOWN")
    for attempt in range(wait.max_tries):
        status = components.status(component.arn)
        if status.state == DEPLOYABLE:
            return
        if status.state in _FAILED_STATES:
            details = "; ".join(f"{k}: {v}" for k, v in sorted(status.errors.items()))
            raise GreengrassError(
                f"component {component.name} {component.version} is {status.state}: {status.message}"
                + (f" ({details})" if details else "")
            )
        if attempt + 1 < wait.max_tries:
            sleep(wait.delay_seconds)
    raise GreengrassError(
        f"component {component.name} {component.version} is still {status.state} after "
        f"{wait.max_tries} checks; not deploying it"
    )


def model_configuration(component: ComponentVersionRef, model: ModelInfo) -> dict[str, str]:
    """The ``model`` key merged into the inference component (docs/contracts.md §3)."""
    return {
        "component": component.name,
        "version": component.version,
        "sha256": model.sha256,
        "modelVersion": model.model_version,
    }


def plan_deployment(
    latest: Deployment | None,
    *,
    config: PublisherConfig,
    model_component: ComponentVersionRef,
    model_configuration: Mapping[str, str],
    rollout: RolloutPolicy,
) -> DeploymentRequest:
    """The target's next deployment: the latest one with the model and inference components set."""
    return plan_model_deployment(
        latest,
        target=config.target,
        inference_component_name=config.inference_component_name,
        inference_component_version=config.inference_component_version,
        model_component=model_component,
        model_configuration=model_configuration,
        rollout=rollout,
    )


def plan_model_deployment(
    latest: Deployment | None,
    *,
    target: ThingGroupArn,
    inference_component_name: str,
    inference_component_version: str,
    model_component: ComponentVersionRef,
    model_configuration: Mapping[str, str],
    rollout: RolloutPolicy,
) -> DeploymentRequest:
    """``latest`` with the model component and the inference component's ``model`` key replaced.

    A new deployment replaces the previous one for its target, so every other component of the latest
    deployment is carried over as it was (promotion and rollback use this too).
    """
    components: dict[str, ComponentDeployment] = dict(latest.components) if latest is not None else {}
    components[model_component.name] = ComponentDeployment(component_version=model_component.version)
    previous = components.get(inference_component_name)
    merge = _parse_merge(previous.configuration_merge if previous else None, inference_component_name)
    merge[MODEL_CONFIGURATION_KEY] = dict(model_configuration)
    inference = previous if previous is not None else ComponentDeployment(component_version="")
    components[inference_component_name] = replace(
        inference,
        component_version=inference_component_version,
        configuration_merge=json.dumps(merge, sort_keys=True, separators=(",", ":")),
    )
    return DeploymentRequest(
        target_arn=target.arn,
        name=(latest.name if latest is not None and latest.name else f"edgeml-{target.name}"),
        components=components,
        policy=rollout,
        tags=dict(latest.tags) if latest is not None else {},
    )


def _parse_merge(merge: str | None, component_name: str) -> dict[str, object]:
    if not merge:
        return {}
    try:
        parsed = json.loads(merge)
    except ValueError as exc:
        raise GreengrassError(
            f"the latest deployment's configurationUpdate.merge for {component_name} is not JSON: {exc}"
        ) from exc
    if not isinstance(parsed, dict):
        raise GreengrassError(
            f"the latest deployment's configurationUpdate.merge for {component_name} is not a JSON object"
        )
    return parsed


def same_components(a: Mapping[str, ComponentDeployment], b: Mapping[str, ComponentDeployment]) -> bool:
    """Whether two deployments run the same components with the same configuration updates."""
    if a.keys() != b.keys():
        return False
    for name, left in a.items():
        right = b[name]
        if replace(left, configuration_merge=None) != replace(right, configuration_merge=None):
            return False
        if _merge_value(left.configuration_merge) != _merge_value(right.configuration_merge):
            return False
    return True


def _merge_value(merge: str | None) -> object:
    # Compare merges as JSON values: the same update may be spelled with different spacing or key order.
    if not merge:
        return None
    try:
        return json.loads(merge)
    except ValueError:
        return merge
