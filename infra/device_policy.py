"""The core-device IoT policy: one policy per thing, with the thing's name written out.

AWS IoT Greengrass does not support thing policy variables (``${iot:Connection.Thing.*}``) in the AWS IoT
policies of core devices or for its data-plane operations (Greengrass v2 developer guide, "Device
authentication and authorization"). The nucleus also opens extra MQTT connections with the client IDs
``<thing>#2``, ``<thing>#3`` …, which ``client/${iot:Connection.Thing.ThingName}`` never matches. So each
core device gets its own policy, ``<name prefix>-core-device-<thing>``, naming its thing literally.

Every topic stays the thing's own (``edge/<thing>/…``, ``$aws/things/<thing>/…``): the ingest rules'
identity model (``infra/parts/ingest.py``, "Identity") trusts the thing in the topic because a
certificate can publish only under its own thing. A thing name is therefore refused when it is not a
valid IoT thing name or holds an IoT policy wildcard (``*``, ``?``): such a name would widen the policy
beyond its own thing.

This module is pure and imports nothing from aws_cdk: the Fleet stack (``infra/parts/fleet.py``) takes
the role alias name from it, and ``edgeml device policy`` renders and creates the policies.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final, Literal, TypedDict

POLICY_LANGUAGE_VERSION: Final = "2012-10-17"
# AWS IoT Core quota: a policy document holds at most 2048 characters, white space excluded.
MAX_POLICY_CHARACTERS: Final = 2048
# botocore's iot model: ThingName [a-zA-Z0-9:_-]+, PolicyName [\w+=,.@-]+, RoleAlias [\w=,@-]+, each
# 1-128 characters (Java's \w: ASCII letters, digits and _).
THING_NAME: Final = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
POLICY_NAME: Final = re.compile(r"[\w+=,.@-]{1,128}", flags=re.ASCII)
ROLE_ALIAS: Final = re.compile(r"[\w=,@-]{1,128}", flags=re.ASCII)
# IoT policies treat * and ? as wildcards in resources (+ and # are literal).
POLICY_WILDCARDS: Final = frozenset("*?")
_PARTITION: Final = re.compile(r"aws(-[a-z]+)*")
_REGION: Final = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_ACCOUNT: Final = re.compile(r"\d{12}")


class DevicePolicyError(ValueError):
    """A thing name or setting that cannot make a per-device policy."""


class PolicyStatement(TypedDict):
    Effect: Literal["Allow"]
    Action: str | list[str]
    Resource: str | list[str]


class PolicyDocument(TypedDict):
    Version: str
    Statement: list[PolicyStatement]


def role_alias_name(name_prefix: str) -> str:
    """The token-exchange role alias the Fleet stack creates (its ``RoleAliasName`` output)."""
    return f"{name_prefix}-token-exchange"


def device_policy_name(name_prefix: str, thing_name: str) -> str:
    """``<name prefix>-core-device-<thing>``: the policy of one core device."""
    check_thing_name(thing_name)
    name = f"{name_prefix}-core-device-{thing_name}"
    if not POLICY_NAME.fullmatch(name):
        # ':' is valid in a thing name but not in a policy name, and the prefix adds length.
        raise DevicePolicyError(
            f"thing name {thing_name!r} cannot name its policy {name!r}: a policy name is 1-128 of "
            "letters, digits and _+=,.@- (no ':')"
        )
    return name


def check_thing_name(thing_name: str) -> None:
    """Refuse names that are not thing names or that an IoT policy would read as a wildcard."""
    wildcards = sorted(POLICY_WILDCARDS.intersection(thing_name))
    if wildcards:
        raise DevicePolicyError(
            f"thing name {thing_name!r} contains the IoT policy wildcard {' '.join(wildcards)}: its policy "
            "would grant other things' topics and client IDs"
        )
    if not THING_NAME.fullmatch(thing_name):
        raise DevicePolicyError(
            f"{thing_name!r} is not an IoT thing name (1-128 of letters, digits and : _ -)"
        )


@dataclass(frozen=True)
class DevicePolicyScope:
    """Where core-device policies apply (the account and region of the things) and what they name."""

    partition: str
    region: str
    account: str
    name_prefix: str
    role_alias: str

    def __post_init__(self) -> None:
        for what, value, pattern in (
            ("partition", self.partition, _PARTITION),
            ("region", self.region, _REGION),
            ("account", self.account, _ACCOUNT),
            ("name prefix", self.name_prefix, POLICY_NAME),
            ("role alias", self.role_alias, ROLE_ALIAS),
        ):
            # The patterns admit no policy wildcard: nothing here can widen a resource.
            if not pattern.fullmatch(value):
                raise DevicePolicyError(f"{value!r} is not a valid {what}")

    def iot_arn(self, resource: str) -> str:
        return f"arn:{self.partition}:iot:{self.region}:{self.account}:{resource}"

    def policy_name(self, thing_name: str) -> str:
        return device_policy_name(self.name_prefix, thing_name)


# docs/contracts.md §4: what a device publishes and what the cloud sends it, under edge/<thing>/.
def anomaly_topic(thing_name: str) -> str:
    return f"edge/{thing_name}/anomalies"


def health_topic(thing_name: str) -> str:
    return f"edge/{thing_name}/health"


def ack_topic(thing_name: str) -> str:
    return f"edge/{thing_name}/acks"


def render_device_policy(thing_name: str, scope: DevicePolicyScope) -> PolicyDocument:
    """The policy document of core device ``thing_name``.

    The grants of the AWS "minimal AWS IoT policy for Greengrass V2 core devices", narrowed to the thing's
    own client IDs, topics, shadow and role alias. IoT Core takes at most 2048 characters per document,
    and the thing name and an ARN prefix recur in it, so the statements carry no ``Sid`` and are grouped
    by resource rather than by purpose; see the comments for what each one is for.
    """
    check_thing_name(thing_name)
    arn = scope.iot_arn
    own_things = f"$aws/things/{thing_name}"
    document: PolicyDocument = {
        "Version": POLICY_LANGUAGE_VERSION,
        "Statement": [
            # The nucleus's first connection uses the thing name as client ID, its extra ones <thing>#2,
            # #3 …; '#' is literal in an IoT policy, so <thing>#* matches those and no other thing's client
            # ID (AWS's example, <thing>*, would also match a thing named <thing>0).
            _allow("iot:Connect", [arn(f"client/{thing_name}"), arn(f"client/{thing_name}#*")]),
            # Devices publish their anomalies and health (docs/contracts.md §4), and nothing else under
            # edge/ (not their own acks topic: acks come from the cloud only); the nucleus reports status.
            _allow(
                "iot:Publish",
                [
                    arn(f"topic/{anomaly_topic(thing_name)}"),
                    arn(f"topic/{health_topic(thing_name)}"),
                    arn(f"topic/{own_things}/greengrass/health/json"),
                    arn(f"topic/{own_things}/greengrassv2/health/json"),
                ],
            ),
            # The nucleus takes deployments over jobs and the deployment shadow.
            _allow(
                ["iot:Publish", "iot:Receive"],
                [arn(f"topic/{own_things}/jobs/*"), arn(f"topic/{own_things}/shadow/*")],
            ),
            # Under edge/ a device hears only the cloud's acks of its own events: the exact topic, so no
            # filter on edge/ can reach another thing's or its own telemetry.
            _allow("iot:Receive", arn(f"topic/{ack_topic(thing_name)}")),
            _allow(
                "iot:Subscribe",
                [
                    arn(f"topicfilter/{ack_topic(thing_name)}"),
                    arn(f"topicfilter/{own_things}/jobs/*"),
                    arn(f"topicfilter/{own_things}/shadow/*"),
                ],
            ),
            _allow(
                ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"],
                arn(f"thing/{thing_name}"),
            ),
            # Token exchange: AWS credentials of the Fleet stack's role, for artifact downloads.
            _allow("iot:AssumeRoleWithCertificate", arn(f"rolealias/{scope.role_alias}")),
            # Greengrass data-plane calls, not resource-scoped in IoT policies (AWS minimal policy).
            # ListThingGroupsForCoreDevice (nucleus >= 2.5.0): without it the nucleus keeps its persisted
            # group membership, so a device moved out of the canary group keeps the canary deployment.
            _allow(
                [
                    "greengrass:GetComponentVersionArtifact",
                    "greengrass:ResolveComponentCandidates",
                    "greengrass:GetDeploymentConfiguration",
                    "greengrass:ListThingGroupsForCoreDevice",
                ],
                "*",
            ),
        ],
    }
    size = len(compact_json(document))
    if size > MAX_POLICY_CHARACTERS:
        without_name = size - NAME_OCCURRENCES * len(thing_name)
        longest = (MAX_POLICY_CHARACTERS - without_name) // NAME_OCCURRENCES
        raise DevicePolicyError(
            f"the policy of thing {thing_name!r} would have {size} characters, IoT Core takes at most "
            f"{MAX_POLICY_CHARACTERS}: with this account, region and role alias a core device's thing name "
            f"can have at most {max(longest, 0)} characters"
        )
    return document


# How often a rendered document names its thing: each character of the name adds this many to its size.
NAME_OCCURRENCES: Final = 13


def _allow(action: str | list[str], resource: str | list[str]) -> PolicyStatement:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def compact_json(document: PolicyDocument) -> str:
    """The document without white space, as IoT Core counts its size."""
    return json.dumps(document, separators=(",", ":"))
