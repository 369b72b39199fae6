"""``edgeml device policy``: a core device's own IoT policy, created in IoT Core before it is installed.

The document comes from ``infra.device_policy`` (the same module the Fleet stack names its role alias
with). The policy is ``<name prefix>-core-device-<thing>``; the Greengrass installer then attaches it to
the certificate it creates (``--thing-policy-name``). Idempotent: an identical policy is left as it is.
A policy of that name with other grants (the installer's broad default, say, or an older rendering) is
reported and left alone unless ``update``, which makes the rendered document a new default version,
first deleting the oldest non-default version when the policy has the five IoT Core allows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from edgeml.errors import RefusedError, UsageError
from infra.device_policy import (
    DevicePolicyError,
    DevicePolicyScope,
    PolicyDocument,
    compact_json,
    render_device_policy,
    role_alias_name,
)
from lambdas.lifecycle.config import ENV_FLEET_THING_GROUP_ARN
from lambdas.publisher.config import ThingGroupArn
from lambdas.publisher.errors import ConfigError as PublisherConfigError

# IoT Core keeps at most five versions of a policy.
MAX_POLICY_VERSIONS: Final = 5
_SHOWN_GRANTS: Final = 3

# One grant: (effect, action, resource, the statement's other keys as JSON, e.g. a Condition).
Grant = tuple[str, str, str, str]


@dataclass(frozen=True)
class DevicePolicyRequest:
    thing_name: str
    name_prefix: str
    region: str
    role_alias: str | None = None  # default: the Fleet stack's, role_alias_name(name_prefix)
    update: bool = False


def create_device_policy(
    request: DevicePolicyRequest,
    *,
    environ: Mapping[str, str],
    iot: Any | None = None,
    sts: Any | None = None,
) -> dict[str, object]:
    """Create (or with ``update``, bring up to date) the core device's policy; the JSON-ready result."""
    iot = iot if iot is not None else boto3.client("iot", region_name=request.region)
    sts = sts if sts is not None else boto3.client("sts", region_name=request.region)
    scope = _scope(request, sts=sts, environ=environ)
    try:
        name = scope.policy_name(request.thing_name)
        document = render_device_policy(request.thing_name, scope)
    except DevicePolicyError as exc:
        raise UsageError(str(exc)) from exc
    _require_role_alias(iot, scope)
    result: dict[str, object] = {
        "thing_name": request.thing_name,
        "policy_name": name,
        "region": scope.region,
        "account": scope.account,
        "role_alias": scope.role_alias,
    }
    return {**_ensure(iot, name, document, update=request.update), **result}


def _scope(request: DevicePolicyRequest, *, sts: Any, environ: Mapping[str, str]) -> DevicePolicyScope:
    # The policy is created with these credentials in this region, so its ARNs name that account and
    # region: a policy naming another account's resources would grant the device nothing.
    caller_arn = str(sts.get_caller_identity()["Arn"])
    partition, account = caller_arn.split(":")[1], caller_arn.split(":")[4]
    fleet_text = environ.get(ENV_FLEET_THING_GROUP_ARN, "").strip()
    if fleet_text:
        try:
            fleet = ThingGroupArn.parse(fleet_text)
        except PublisherConfigError as exc:
            raise UsageError(f"{ENV_FLEET_THING_GROUP_ARN}: {fleet_text!r} is not a thing-group ARN") from exc
        if (fleet.partition, fleet.account, fleet.region) != (partition, account, request.region):
            raise UsageError(
                f"{ENV_FLEET_THING_GROUP_ARN} is in account {fleet.account}, region {fleet.region}, but the "
                f"policy would be created in account {account}, region {request.region}: use the fleet's "
                "credentials and --region"
            )
    try:
        return DevicePolicyScope(
            partition=partition,
            region=request.region,
            account=account,
            name_prefix=request.name_prefix,
            role_alias=request.role_alias or role_alias_name(request.name_prefix),
        )
    except DevicePolicyError as exc:
        raise UsageError(str(exc)) from exc


def _require_role_alias(iot: Any, scope: DevicePolicyScope) -> None:
    """A wrong name prefix or region shows here, before a policy that grants a missing alias is made."""
    try:
        iot.describe_role_alias(roleAlias=scope.role_alias)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        raise UsageError(
            f"role alias {scope.role_alias!r} does not exist in {scope.region}: deploy the Fleet stack there "
            "first, or check --name-prefix (or give --role-alias its RoleAliasName output)"
        ) from exc


def _ensure(iot: Any, name: str, document: PolicyDocument, *, update: bool) -> dict[str, object]:
    text = compact_json(document)
    existing = _get_policy(iot, name)
    if existing is None:
        try:
            created = iot.create_policy(policyName=name, policyDocument=text)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                raise
            existing = _get_policy(iot, name)  # created meanwhile: compare with that one
        else:
            return {"status": "created", "policy_arn": created["policyArn"], "version_id": "1"}
    if existing is None:
        raise RefusedError(f"IoT policy {name} was created and deleted while this command ran; run it again")
    wanted, current = _grants(json.loads(text)), _grants(_parsed(existing["policyDocument"]))
    arn, default_version = str(existing["policyArn"]), str(existing.get("defaultVersionId", ""))
    if wanted == current:
        return {"status": "unchanged", "policy_arn": arn, "version_id": default_version}
    difference = _describe_difference(extra=current - wanted, missing=wanted - current)
    if not update:
        raise RefusedError(
            f"IoT policy {name} exists and its default version {default_version} differs from this "
            f"device's rendered policy ({difference}); it is left as it is. Check what made it (the "
            "Greengrass installer creates a policy that allows everything when the name it is given does "
            "not exist), then run again with --update to make the rendered document its default version"
        )
    pruned = _prune_oldest(iot, name)
    version = iot.create_policy_version(policyName=name, policyDocument=text, setAsDefault=True)
    result: dict[str, object] = {
        "status": "updated",
        "policy_arn": arn,
        "version_id": str(version["policyVersionId"]),
        "replaced_version_id": default_version,
        "difference": difference,
    }
    if pruned is not None:
        result["pruned_version_id"] = pruned
    return result


def _get_policy(iot: Any, name: str) -> dict[str, Any] | None:
    try:
        policy: dict[str, Any] = iot.get_policy(policyName=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    return policy


def _prune_oldest(iot: Any, name: str) -> str | None:
    """At the version limit, delete the oldest non-default version (IoT Core refuses a sixth)."""
    versions = iot.list_policy_versions(policyName=name)["policyVersions"]
    if len(versions) < MAX_POLICY_VERSIONS:
        return None
    oldest = min(
        (v for v in versions if not v.get("isDefaultVersion")),
        key=lambda v: int(v["versionId"]),
    )
    iot.delete_policy_version(policyName=name, policyVersionId=oldest["versionId"])
    return str(oldest["versionId"])


def _parsed(text: object) -> object:
    try:
        return json.loads(str(text))
    except ValueError:
        return None


def _grants(document: object) -> frozenset[Grant]:
    """Each statement as single (effect, action, resource) grants: equal sets grant the same."""
    if not isinstance(document, dict):
        return frozenset()
    statements = document.get("Statement", [])
    found: set[Grant] = set()
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict) or not {"Action", "Resource"} <= statement.keys():
            # NotAction / NotResource (or a malformed statement) grants more than any product of
            # actions and resources: kept whole, so it always shows as a difference.
            found.add(("statement", json.dumps(statement, sort_keys=True), "", ""))
            continue
        rest = json.dumps(
            {k: v for k, v in statement.items() if k not in {"Sid", "Effect", "Action", "Resource"}},
            sort_keys=True,
        )
        found.update(
            (str(statement.get("Effect")), action, resource, rest)
            for action in _as_list(statement.get("Action"))
            for resource in _as_list(statement.get("Resource"))
        )
    return frozenset(found)


def _as_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(item) for item in value]
    return [] if value is None else [str(value)]


def _describe_difference(*, extra: frozenset[Grant], missing: frozenset[Grant]) -> str:
    parts = []
    for label, grants in (("also has", extra), ("lacks", missing)):
        if grants:
            shown = ", ".join(_grant_text(grant) for grant in sorted(grants)[:_SHOWN_GRANTS])
            more = f" and {len(grants) - _SHOWN_GRANTS} more" if len(grants) > _SHOWN_GRANTS else ""
            parts.append(f"it {label} {shown}{more}")
    return "; ".join(parts)


def _grant_text(grant: Grant) -> str:
    effect, action, resource, rest = grant
    if effect == "statement":
        return f"the statement {action}"
    text = f"{action} on {resource}" if effect == "Allow" else f"{effect} {action} on {resource}"
    return text if rest == "{}" else f"{text} with {rest}"
