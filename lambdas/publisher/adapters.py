"""The AWS side of the publisher's ports: S3 for models, Greengrass v2 for components and deployments.

Each adapter takes its boto3 client in the constructor, or creates one on first use, so nothing talks
to AWS at import time and tests hand in clients pointed at moto or at the Greengrass v2 fake.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, NoReturn

from botocore.exceptions import ClientError

from lambdas.common.aws import ServiceAdapter, is_throttling
from lambdas.common.aws import error_code as _error_code
from lambdas.common.aws import error_message as _error_message
from lambdas.publisher.core import (
    ComponentDeployment,
    ComponentStatus,
    ComponentVersionRef,
    Deployment,
    DeploymentRequest,
    RolloutPolicy,
)
from lambdas.publisher.errors import (
    ComponentVersionConflictError,
    GreengrassError,
    ModelNotFoundError,
    ModelValidationError,
    RetryableError,
)
from lambdas.publisher.versioning import SemVer

# S3's 409 for a conditional write racing another write to the same key (lambdas/ingest/adapters.py).
CONDITIONAL_WRITE_CONFLICT: Final = "ConditionalRequestConflict"


def raise_if_retryable(exc: ClientError, doing: str) -> None:
    """Re-raise a throttling or transient service error as ``RetryableError``; otherwise return."""
    if is_throttling(exc):
        raise RetryableError(f"{doing}: {_error_code(exc)}: {_error_message(exc)}") from exc


def _raise_read_error(exc: ClientError, doing: str, bucket: str, key: str) -> NoReturn:
    """A read of a model object failed: retryable, missing (``ModelNotFoundError``), or re-raised."""
    raise_if_retryable(exc, doing)
    if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
        raise ModelNotFoundError(f"model object s3://{bucket}/{key} does not exist") from exc
    raise exc


class S3ModelStore(ServiceAdapter):
    """Reads models from and writes version-addressed models to S3."""

    service_name = "s3"

    def read(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            _raise_read_error(exc, f"reading s3://{bucket}/{key}", bucket, key)
        body = response["Body"]
        try:
            size = int(response.get("ContentLength", 0))
            if size > max_bytes:
                raise ModelValidationError(f"s3://{bucket}/{key} is {size} bytes; the limit is {max_bytes}")
            # Read one byte past the limit so a body longer than its header says is still caught.
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ModelValidationError(f"s3://{bucket}/{key} is larger than the limit of {max_bytes} bytes")
        return data

    def put_if_absent(
        self, bucket: str, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None
    ) -> bool:
        try:
            # A conditional write: two concurrent publishers cannot both create the key.
            self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                IfNoneMatch="*",
                ContentType="application/octet-stream",
                Metadata=dict(metadata or {}),
            )
        except ClientError as exc:
            doing = f"writing s3://{bucket}/{key}"
            raise_if_retryable(exc, doing)
            code = _error_code(exc)
            if code == "PreconditionFailed":
                return False
            if code == CONDITIONAL_WRITE_CONFLICT:
                # Another conditional write to the key is in flight and may yet fail, so whether the key
                # will exist is unknown: retrying the invocation decides it (then PreconditionFailed or
                # written).
                raise RetryableError(f"{doing}: {code}: {_error_message(exc)}") from exc
            raise
        return True

    def metadata(self, bucket: str, key: str) -> Mapping[str, str]:
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            _raise_read_error(exc, f"reading the metadata of s3://{bucket}/{key}", bucket, key)
        return {str(name): str(value) for name, value in response.get("Metadata", {}).items()}


class GreengrassComponents(ServiceAdapter):
    """Component versions in Greengrass v2."""

    service_name = "greengrassv2"

    def list_versions(self, component_arn: str) -> list[ComponentVersionRef]:
        refs: list[ComponentVersionRef] = []
        try:
            for page in self.client.get_paginator("list_component_versions").paginate(arn=component_arn):
                refs.extend(
                    ComponentVersionRef(
                        name=item["componentName"], version=item["componentVersion"], arn=item["arn"]
                    )
                    for item in page.get("componentVersions", [])
                )
        except ClientError as exc:
            raise_if_retryable(exc, f"listing versions of {component_arn}")
            if _error_code(exc) == "ResourceNotFoundException":
                return []
            raise GreengrassError(f"cannot list versions of {component_arn}: {_error_message(exc)}") from exc
        # The API documents newest-first; sort anyway, by semver precedence, so "newest" is ours to define.
        return sorted(refs, key=lambda ref: SemVer.parse(ref.version), reverse=True)

    def get_recipe(self, version_arn: str) -> bytes:
        try:
            response = self.client.get_component(arn=version_arn, recipeOutputFormat="JSON")
        except ClientError as exc:
            raise_if_retryable(exc, f"reading the recipe of {version_arn}")
            raise GreengrassError(f"cannot read the recipe of {version_arn}: {_error_message(exc)}") from exc
        recipe: bytes = response["recipe"]
        return recipe

    def create(self, recipe: bytes) -> ComponentVersionRef:
        try:
            response = self.client.create_component_version(inlineRecipe=recipe)
        except ClientError as exc:
            raise_if_retryable(exc, "creating a component version")
            if _error_code(exc) == "ConflictException":
                raise ComponentVersionConflictError(
                    f"component version already exists: {_error_message(exc)}"
                ) from exc
            raise GreengrassError(f"Greengrass refused the component version: {_error_message(exc)}") from exc
        return ComponentVersionRef(
            name=response["componentName"], version=response["componentVersion"], arn=response["arn"]
        )

    def status(self, version_arn: str) -> ComponentStatus:
        try:
            response = self.client.describe_component(arn=version_arn)
        except ClientError as exc:
            raise_if_retryable(exc, f"describing {version_arn}")
            raise GreengrassError(f"cannot describe {version_arn}: {_error_message(exc)}") from exc
        status = response.get("status", {})
        return ComponentStatus(
            state=str(status.get("componentState", "UNKNOWN")),
            message=str(status.get("message", "")),
            errors={str(k): str(v) for k, v in status.get("errors", {}).items()},
        )


class GreengrassDeployments(ServiceAdapter):
    """Deployments in Greengrass v2: read the target's latest, create its next revision."""

    service_name = "greengrassv2"

    def latest_for_target(self, target_arn: str) -> Deployment | None:
        try:
            candidates = [
                item
                for item in self._list_latest(target_arn)
                # Subdeployments (canaries with a parent) are not the target's own deployment.
                if item.get("targetArn") == target_arn
                and not item.get("parentTargetArn")
                and item.get("isLatestForTarget", True)
            ]
            if not candidates:
                return None
            latest = max(candidates, key=lambda item: item["creationTimestamp"])
            response = self.client.get_deployment(deploymentId=latest["deploymentId"])
        except ClientError as exc:
            raise_if_retryable(exc, f"reading the latest deployment of {target_arn}")
            raise GreengrassError(
                f"cannot read the latest deployment of {target_arn}: {_error_message(exc)}"
            ) from exc
        return _deployment_from_api(response)

    def get(self, deployment_id: str) -> Deployment:
        """One deployment by id (any revision, latest or not)."""
        try:
            response = self.client.get_deployment(deploymentId=deployment_id)
        except ClientError as exc:
            raise_if_retryable(exc, f"reading deployment {deployment_id}")
            raise GreengrassError(f"cannot read deployment {deployment_id}: {_error_message(exc)}") from exc
        return _deployment_from_api(response)

    def _list_latest(self, target_arn: str) -> Iterator[Mapping[str, Any]]:
        paginator = self.client.get_paginator("list_deployments")
        for page in paginator.paginate(targetArn=target_arn, historyFilter="LATEST_ONLY"):
            yield from page.get("deployments", [])

    def create(self, request: DeploymentRequest) -> str:
        policy = request.policy
        arguments: dict[str, Any] = {
            "targetArn": request.target_arn,
            "deploymentName": request.name,
            "components": {name: _component_to_api(spec) for name, spec in request.components.items()},
            "deploymentPolicies": {
                "failureHandlingPolicy": policy.failure_handling,
                "componentUpdatePolicy": {
                    "action": policy.component_update_action,
                    "timeoutInSeconds": policy.component_update_timeout_seconds,
                },
            },
            "iotJobConfiguration": {
                "abortConfig": {
                    "criteriaList": [
                        {
                            "failureType": "ALL",
                            "action": "CANCEL",
                            "thresholdPercentage": policy.abort_threshold_percentage,
                            "minNumberOfExecutedThings": policy.abort_min_executed_things,
                        }
                    ]
                },
                "timeoutConfig": {"inProgressTimeoutInMinutes": policy.in_progress_timeout_minutes},
            },
        }
        rollout_config = _rollout_config(policy)
        if rollout_config:
            arguments["iotJobConfiguration"]["jobExecutionsRolloutConfig"] = rollout_config
        if request.tags:
            arguments["tags"] = dict(request.tags)
        try:
            response = self.client.create_deployment(**arguments)
        except ClientError as exc:
            raise_if_retryable(exc, f"creating a deployment for {request.target_arn}")
            raise GreengrassError(
                f"Greengrass refused the deployment to {request.target_arn}: {_error_message(exc)}"
            ) from exc
        deployment_id: str = response["deploymentId"]
        return deployment_id


def _deployment_from_api(response: Mapping[str, Any]) -> Deployment:
    return Deployment(
        deployment_id=response["deploymentId"],
        target_arn=response["targetArn"],
        name=response.get("deploymentName"),
        components={name: _component_from_api(spec) for name, spec in response.get("components", {}).items()},
        tags=dict(response.get("tags", {})),
    )


def _rollout_config(policy: RolloutPolicy) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if policy.rollout_base_rate_per_minute is not None:
        config["exponentialRate"] = {
            "baseRatePerMinute": policy.rollout_base_rate_per_minute,
            "incrementFactor": policy.rollout_increment_factor,
            "rateIncreaseCriteria": {"numberOfSucceededThings": policy.rollout_rate_increase_after_succeeded},
        }
    if policy.rollout_maximum_per_minute is not None:
        config["maximumPerMinute"] = policy.rollout_maximum_per_minute
    return config


def _component_from_api(spec: Mapping[str, Any]) -> ComponentDeployment:
    update = spec.get("configurationUpdate") or {}
    reset = update.get("reset")
    return ComponentDeployment(
        component_version=spec["componentVersion"],
        configuration_merge=update.get("merge"),
        configuration_reset=tuple(reset) if reset is not None else None,
        run_with=spec.get("runWith"),
    )


def _component_to_api(spec: ComponentDeployment) -> dict[str, Any]:
    api: dict[str, Any] = {"componentVersion": spec.component_version}
    update: dict[str, Any] = {}
    if spec.configuration_merge is not None:
        update["merge"] = spec.configuration_merge
    if spec.configuration_reset is not None:
        update["reset"] = list(spec.configuration_reset)
    if update:
        api["configurationUpdate"] = update
    if spec.run_with is not None:
        api["runWith"] = dict(spec.run_with)
    return api
