"""IoT fleet: thing groups, the token-exchange role and its alias; no shared core-device policy."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Capture, Match, Template

from infra.device_policy import role_alias_name
from tests.infra.conftest import BUCKET, Synthesized, as_list, flatten, resources_of


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("fleet")


def test_thing_groups(template: Template) -> None:
    names = {
        g["Properties"]["ThingGroupName"] for g in template.find_resources("AWS::IoT::ThingGroup").values()
    }
    assert names == {"edgeml-dev-canary", "edgeml-dev-fleet"}


def test_no_shared_core_device_policy(dev: Synthesized, template: Template) -> None:
    """Greengrass does not support thing policy variables in core devices' policies: each device gets its
    own (infra/device_policy.py, `edgeml device policy`), and no stack makes one for the whole fleet."""
    assert template.find_resources("AWS::IoT::Policy") == {}
    for stack in ("model_store", "training", "fleet", "publisher", "ingest", "lifecycle", "monitoring"):
        text = json.dumps(dev.template(stack).to_json())
        assert "iot:Connection.Thing" not in text, stack
        assert "AWS::IoT::Policy" not in text, stack
    outputs = template.find_outputs("*")
    assert "DevicePolicyName" not in outputs
    assert outputs["RoleAliasName"]["Value"] == role_alias_name("edgeml-dev") == "edgeml-dev-token-exchange"


def test_role_alias_points_to_token_exchange_role(template: Template) -> None:
    role = Capture()
    template.has_resource_properties(
        "AWS::IoT::RoleAlias",
        {"RoleAlias": role_alias_name("edgeml-dev"), "RoleArn": {"Fn::GetAtt": [role, "Arn"]}},
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
