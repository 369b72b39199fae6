"""IoT fleet: thing groups, the per-thing device policy, the token-exchange role and its alias."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from tests.infra.conftest import BUCKET, IOT, Synthesized, as_list, flatten, resources_of

THING = "${iot:Connection.Thing.ThingName}"


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("fleet")


@pytest.fixture(scope="module")
def device_statements(template: Template) -> dict[str, dict[str, Any]]:
    policies = template.find_resources("AWS::IoT::Policy")
    assert len(policies) == 1
    policy = next(iter(policies.values()))["Properties"]
    assert policy["PolicyName"] == "edgeml-dev-core-device"
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


def test_thing_groups(template: Template) -> None:
    names = {
        g["Properties"]["ThingGroupName"] for g in template.find_resources("AWS::IoT::ThingGroup").values()
    }
    assert names == {"edgeml-dev-canary", "edgeml-dev-fleet"}


def test_connect_only_as_own_thing(device_statements: dict[str, dict[str, Any]]) -> None:
    connect = device_statements["ConnectAsOwnThing"]
    assert connect["Action"] == "iot:Connect"
    assert resources_of(connect) == [f"{IOT}client/{THING}"]


def test_publish_telemetry_only_under_own_prefix(device_statements: dict[str, dict[str, Any]]) -> None:
    publish = device_statements["PublishOwnTelemetry"]
    assert publish["Action"] == "iot:Publish"
    # Exactly the two telemetry topics: not the device's own acks topic (a forged ack would drop events).
    assert resources_of(publish) == [f"{IOT}topic/edge/{THING}/anomalies", f"{IOT}topic/edge/{THING}/health"]


def test_every_topic_resource_is_the_devices_own(device_statements: dict[str, dict[str, Any]]) -> None:
    topic_statements = [
        "PublishOwnTelemetry",
        "SubscribeOwnTopics",
        "ReceiveOwnTopics",
        "GreengrassNucleusTopics",
    ]
    for sid in topic_statements:
        for resource in resources_of(device_statements[sid]):
            assert THING in resource, (sid, resource)
            assert resource.startswith((f"{IOT}topic/", f"{IOT}topicfilter/")), resource
    assert resources_of(device_statements["SubscribeOwnTopics"]) == [
        f"{IOT}topicfilter/edge/{THING}/acks",
        f"{IOT}topicfilter/$aws/things/{THING}/jobs/*",
        f"{IOT}topicfilter/$aws/things/{THING}/shadow/*",
    ]
    assert resources_of(device_statements["OwnShadow"]) == [f"{IOT}thing/{THING}"]


def test_device_hears_under_edge_only_the_acks_of_its_own_events(
    device_statements: dict[str, dict[str, Any]],
) -> None:
    # docs/contracts.md §4: the cloud acks on edge/<thing>/acks; nothing broader (no edge/<thing>/*, so
    # a device cannot subscribe to or receive its own or anyone's telemetry).
    subscribe, receive = device_statements["SubscribeOwnTopics"], device_statements["ReceiveOwnTopics"]
    assert (subscribe["Action"], receive["Action"]) == ("iot:Subscribe", "iot:Receive")
    edge = [r for s in (subscribe, receive) for r in resources_of(s) if "/edge/" in r]
    assert edge == [f"{IOT}topicfilter/edge/{THING}/acks", f"{IOT}topic/edge/{THING}/acks"]
    # The only statements naming edge/ topics for Subscribe or Receive are these two.
    others = [
        sid
        for sid, s in device_statements.items()
        if sid not in {"SubscribeOwnTopics", "ReceiveOwnTopics"}
        and {"iot:Subscribe", "iot:Receive"} & set(as_list(s["Action"]))
    ]
    assert others == []


def test_device_may_assume_only_its_role_alias(device_statements: dict[str, dict[str, Any]]) -> None:
    statement = device_statements["TokenExchange"]
    assert statement["Action"] == "iot:AssumeRoleWithCertificate"
    assert resources_of(statement) == [f"{IOT}rolealias/edgeml-dev-token-exchange"]


def test_greengrass_data_plane_actions(device_statements: dict[str, dict[str, Any]]) -> None:
    assert device_statements["GreengrassDataPlane"]["Action"] == [
        "greengrass:GetComponentVersionArtifact",
        "greengrass:ResolveComponentCandidates",
        "greengrass:GetDeploymentConfiguration",
        # Nucleus >= 2.5.0 reads its thing groups before each deployment; refused, it keeps stale ones.
        "greengrass:ListThingGroupsForCoreDevice",
    ]
    assert not any("iot:*" in str(s["Action"]) for s in device_statements.values())


def test_role_alias_points_to_token_exchange_role(template: Template) -> None:
    role = Capture()
    template.has_resource_properties(
        "AWS::IoT::RoleAlias",
        {"RoleAlias": "edgeml-dev-token-exchange", "RoleArn": {"Fn::GetAtt": [role, "Arn"]}},
    )
    roles = template.find_resources("AWS::IAM::Role")
    trust = roles[role.as_string()]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "credentials.iot.amazonaws.com"},
        }
    ]


def test_token_exchange_role_reads_only_released_component_artifacts(template: Template) -> None:
    policies = template.find_resources("AWS::IAM::Policy")
    assert len(policies) == 1
    statements = next(iter(policies.values()))["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Sid"] for s in statements] == [
        "DownloadArtifacts",
        "ArtifactBucketLocation",
        "DecryptArtifacts",
    ]
    download, location, decrypt = statements
    assert decrypt["Action"] == "kms:Decrypt"
    assert "ModelStoreKey" in flatten(decrypt["Resource"])
    # Exactly one statement grants S3 reads, on components/* alone: models/ holds candidates the gate
    # rejected or nobody deployed, and devices must not read them.
    s3_reads = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
    assert s3_reads == [download]
    assert download["Action"] == "s3:GetObject"
    assert resources_of(download) == [f"{BUCKET}/components/*"]
    assert not any("/models/" in r for s in statements for r in resources_of(s))
    other_actions = [a for s in statements if s is not download for a in as_list(s["Action"])]
    assert other_actions == ["s3:GetBucketLocation", "kms:Decrypt"]
    assert resources_of(location) == [BUCKET]


def test_token_exchange_role_may_ask_the_artifact_bucket_s_location(template: Template) -> None:
    """The nucleus calls GetBucketLocation before every artifact download; a 403 fails the deployment."""
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": Match.string_like_regexp("TokenExchangePolicy"),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "ArtifactBucketLocation",
                            "Effect": "Allow",
                            "Action": "s3:GetBucketLocation",
                            "Resource": Match.any_value(),
                        }
                    ]
                )
            },
        },
    )
