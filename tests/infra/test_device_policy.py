"""The per-device core-device policy: exact grants, nothing lost from the shared policy, names refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from greengrass_components.anomaly_detector.config import (
    DEFAULT_ACK_TOPIC,
    DEFAULT_ANOMALY_TOPIC,
    DEFAULT_HEALTH_TOPIC,
)
from infra.device_policy import (
    MAX_POLICY_CHARACTERS,
    NAME_OCCURRENCES,
    DevicePolicyError,
    DevicePolicyScope,
    ack_topic,
    anomaly_topic,
    check_thing_name,
    compact_json,
    device_policy_name,
    health_topic,
    render_device_policy,
    role_alias_name,
)
from lambdas.ingest.acks import ack_topic as ingest_ack_topic

REPO = Path(__file__).resolve().parents[2]
SHARED_POLICY = Path(__file__).parent / "fixtures" / "shared_core_device_policy.json"
THING_VARIABLE = "${iot:Connection.Thing.ThingName}"
SCOPE = DevicePolicyScope(
    partition="aws",
    region="eu-west-1",
    account="123456789012",
    name_prefix="edgeml-dev",
    role_alias="edgeml-dev-token-exchange",
)
IOT = "arn:aws:iot:eu-west-1:123456789012:"

Grant = tuple[str, str, str]


def grants(document: Mapping[str, Any]) -> set[Grant]:
    """(effect, action, resource) for every action and resource of every statement."""
    found: set[Grant] = set()
    for statement in document["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}, statement  # no conditions
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        found |= {(statement["Effect"], a, r) for a in actions for r in resources}
    return found


def test_the_rendered_document_of_gw_01() -> None:
    assert render_device_policy("gw-01", SCOPE) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": [f"{IOT}client/gw-01", f"{IOT}client/gw-01#*"],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [
                    f"{IOT}topic/edge/gw-01/anomalies",
                    f"{IOT}topic/edge/gw-01/health",
                    f"{IOT}topic/$aws/things/gw-01/greengrass/health/json",
                    f"{IOT}topic/$aws/things/gw-01/greengrassv2/health/json",
                ],
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [
                    f"{IOT}topic/$aws/things/gw-01/jobs/*",
                    f"{IOT}topic/$aws/things/gw-01/shadow/*",
                ],
            },
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": f"{IOT}topic/edge/gw-01/acks"},
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [
                    f"{IOT}topicfilter/edge/gw-01/acks",
                    f"{IOT}topicfilter/$aws/things/gw-01/jobs/*",
                    f"{IOT}topicfilter/$aws/things/gw-01/shadow/*",
                ],
            },
            {
                "Effect": "Allow",
                "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"],
                "Resource": f"{IOT}thing/gw-01",
            },
            {
                "Effect": "Allow",
                "Action": "iot:AssumeRoleWithCertificate",
                "Resource": f"{IOT}rolealias/edgeml-dev-token-exchange",
            },
            {
                "Effect": "Allow",
                "Action": [
                    "greengrass:GetComponentVersionArtifact",
                    "greengrass:ResolveComponentCandidates",
                    "greengrass:GetDeploymentConfiguration",
                    "greengrass:ListThingGroupsForCoreDevice",
                ],
                "Resource": "*",
            },
        ],
    }


def test_grants_exactly_what_the_shared_policy_granted_with_the_thing_written_out() -> None:
    """The shared policy (commit 3966f0f) with the variable replaced by the name; plus the nucleus's extra
    client IDs, which the variable never matched."""
    shared = json.loads(SHARED_POLICY.read_text())["PolicyDocument"]
    text = (
        json.dumps(shared)
        .replace(THING_VARIABLE, "gw-01")
        .replace("{AWS::Partition}", "aws")
        .replace("{AWS::Region}", "eu-west-1")
        .replace("{AWS::AccountId}", "123456789012")
    )
    old = grants(json.loads(text))
    new = grants(dict(render_device_policy("gw-01", SCOPE)))
    assert old - new == set()
    assert new - old == {("Allow", "iot:Connect", f"{IOT}client/gw-01#*")}
    assert len(old) == 21  # the fixture is the whole shared policy (8 statements)


def test_every_grant_is_the_thing_s_own_and_nothing_is_wildcarded_across_things() -> None:
    for _effect, action, resource in grants(dict(render_device_policy("gw-01", SCOPE))):
        if action.startswith("greengrass:"):
            assert resource == "*"  # data-plane calls take no resource in IoT policies
            continue
        assert resource.startswith(IOT), resource
        name = resource.removeprefix(IOT)
        kind, _, rest = name.partition("/")
        if kind == "rolealias":
            assert rest == "edgeml-dev-token-exchange"
            continue
        # Each client, topic and thing resource is gw-01's: the name sits between separators.
        assert rest == "gw-01" or rest.startswith(("gw-01#", "edge/gw-01/", "$aws/things/gw-01/")), name
        # A wildcard only after the thing's own segment: no other thing can match.
        assert "*" not in rest.split("gw-01", 1)[0], name
    # Under edge/ the device publishes its telemetry and hears only its acks.
    document = dict(render_device_policy("gw-01", SCOPE))
    edge = sorted((a, r.removeprefix(IOT)) for _, a, r in grants(document) if "/edge/" in r)
    assert edge == [
        ("iot:Publish", "topic/edge/gw-01/anomalies"),
        ("iot:Publish", "topic/edge/gw-01/health"),
        ("iot:Receive", "topic/edge/gw-01/acks"),
        ("iot:Subscribe", "topicfilter/edge/gw-01/acks"),
    ]


def test_the_topics_are_the_component_s_and_the_ingest_s() -> None:
    assert anomaly_topic("gw-01") == DEFAULT_ANOMALY_TOPIC.format(thingName="gw-01")
    assert health_topic("gw-01") == DEFAULT_HEALTH_TOPIC.format(thingName="gw-01")
    assert ack_topic("gw-01") == DEFAULT_ACK_TOPIC.format(thingName="gw-01") == ingest_ack_topic("gw-01")


def test_names() -> None:
    assert device_policy_name("edgeml-dev", "gw-01") == "edgeml-dev-core-device-gw-01"
    assert SCOPE.policy_name("gw_01") == "edgeml-dev-core-device-gw_01"
    assert role_alias_name("edgeml-prod") == "edgeml-prod-token-exchange"


@pytest.mark.parametrize(
    ("thing", "message"),
    [
        ("gw-*", "contains the IoT policy wildcard *"),
        ("*", "contains the IoT policy wildcard *"),
        ("gw-0?", "contains the IoT policy wildcard ?"),
        ("g*w?", r"contains the IoT policy wildcard \* \?"),
        ("gw/01", "is not an IoT thing name"),
        ("gw-01#2", "is not an IoT thing name"),
        ("gw+", "is not an IoT thing name"),
        ("gw 01", "is not an IoT thing name"),
        ("gw-01\n", "is not an IoT thing name"),
        ("gw-${iot:ClientId}", "is not an IoT thing name"),
        ("", "is not an IoT thing name"),
        ("a" * 129, "is not an IoT thing name"),
    ],
)
def test_names_that_could_widen_the_policy_are_refused(thing: str, message: str) -> None:
    with pytest.raises(DevicePolicyError, match=message):
        check_thing_name(thing)
    with pytest.raises(DevicePolicyError, match=message):
        render_device_policy(thing, SCOPE)
    with pytest.raises(DevicePolicyError, match=message):
        device_policy_name("edgeml-dev", thing)


def test_a_thing_name_that_cannot_name_a_policy_is_refused() -> None:
    render_device_policy("site:gw-01", SCOPE)  # a valid thing name ...
    with pytest.raises(DevicePolicyError, match=r"cannot name its policy .* \(no ':'\)"):
        device_policy_name("edgeml-dev", "site:gw-01")  # ... but ':' is not allowed in policy names


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition", "aws*"),
        ("region", "*"),
        ("region", "eu-west-1/x"),
        ("account", "*"),
        ("account", "12345678901"),
        ("name_prefix", "edgeml-*"),
        ("name_prefix", ""),
        ("role_alias", "edgeml-*"),
        ("role_alias", ""),
    ],
)
def test_a_scope_that_could_widen_or_break_the_arns_is_refused(field: str, value: str) -> None:
    settings = {
        "partition": "aws",
        "region": "eu-west-1",
        "account": "123456789012",
        "name_prefix": "edgeml-dev",
        "role_alias": "edgeml-dev-token-exchange",
        field: value,
    }
    with pytest.raises(DevicePolicyError, match="is not a valid"):
        DevicePolicyScope(**settings)


def test_other_partitions_and_regions_are_named_in_every_arn() -> None:
    scope = DevicePolicyScope(
        partition="aws-us-gov",
        region="us-gov-west-1",
        account="210987654321",
        name_prefix="edgeml-prod",
        role_alias="edgeml-prod-token-exchange",
    )
    arns = [r for _, _, r in grants(dict(render_device_policy("gw-01", scope))) if r != "*"]
    assert arns
    assert all(r.startswith("arn:aws-us-gov:iot:us-gov-west-1:210987654321:") for r in arns)


def test_the_document_fits_iot_core_s_size_limit_or_the_name_is_refused_with_the_longest_that_fits() -> None:
    assert len(compact_json(render_device_policy("gw-01", SCOPE))) < MAX_POLICY_CHARACTERS
    # Each character of the name adds NAME_OCCURRENCES characters.
    one, two = (len(compact_json(render_device_policy(name, SCOPE))) for name in ("a", "aa"))
    assert two - one == NAME_OCCURRENCES
    with pytest.raises(DevicePolicyError, match=r"can have at most (\d+) characters") as refused:
        render_device_policy("a" * 128, SCOPE)
    longest = int(refused.value.args[0].rsplit("at most ", 1)[1].split()[0])
    assert longest >= 30  # room for descriptive gateway names in every commercial region
    assert len(compact_json(render_device_policy("a" * longest, SCOPE))) <= MAX_POLICY_CHARACTERS
    with pytest.raises(DevicePolicyError, match=f"at most {longest} characters"):
        render_device_policy("a" * (longest + 1), SCOPE)


def test_importable_without_the_cdk() -> None:
    """The CLI renders policies on operators' machines: neither module may pull in aws_cdk."""
    code = "import sys, infra.device_policy, edgeml.device_policy; print('aws_cdk' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
