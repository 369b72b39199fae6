"""`edgeml device policy` against a moto server: create, re-run, a differing policy, --update, pruning."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from edgeml.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from infra.device_policy import DevicePolicyScope, compact_json, render_device_policy
from tests.support.moto import moto_server

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
POLICY = "edgeml-dev-core-device-gw-01"
ALIAS = "edgeml-dev-token-exchange"
SCOPE = DevicePolicyScope(
    partition="aws", region=REGION, account=ACCOUNT, name_prefix="edgeml-dev", role_alias=ALIAS
)
# What the Greengrass installer creates for a --thing-policy-name that does not exist.
INSTALLER_DEFAULT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"],
            "Resource": "*",
        }
    ],
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def iot(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty moto account with the Fleet stack's role alias."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("FLEET_THING_GROUP_ARN", raising=False)
    client = boto3.client("iot", endpoint_url=moto_url, region_name=REGION)
    role = f"arn:aws:iam::{ACCOUNT}:role/edgeml-dev-token-exchange"
    client.create_role_alias(roleAlias=ALIAS, roleArn=role, credentialDurationSeconds=3600)
    return client


def run(moto_url: str, *extra: str, thing: str = "gw-01") -> tuple[int, dict[str, Any], str]:
    out = io.StringIO()
    argv = ["--endpoint-url", moto_url, "--json", "device", "policy", "--thing-name", thing]
    code = main([*argv, "--name-prefix", "edgeml-dev", *extra], out=out)
    text = out.getvalue()
    return code, (json.loads(text) if text else {}), text


def default_document(iot: Any) -> Any:
    return json.loads(iot.get_policy(policyName=POLICY)["policyDocument"])


def versions(iot: Any) -> dict[str, bool]:
    listed = iot.list_policy_versions(policyName=POLICY)["policyVersions"]
    return {v["versionId"]: v["isDefaultVersion"] for v in listed}


def test_creates_the_device_s_policy_with_the_rendered_document(moto_url: str, iot: Any) -> None:
    code, result, _ = run(moto_url)
    assert code == EXIT_OK
    assert result == {
        "status": "created",
        "thing_name": "gw-01",
        "policy_name": POLICY,
        "policy_arn": f"arn:aws:iot:{REGION}:{ACCOUNT}:policy/{POLICY}",
        "version_id": "1",
        "region": REGION,
        "account": ACCOUNT,
        "role_alias": ALIAS,
    }
    assert default_document(iot) == render_device_policy("gw-01", SCOPE)
    # Sent without white space: IoT Core counts its 2048 characters that way anyway.
    assert iot.get_policy(policyName=POLICY)["policyDocument"] == compact_json(
        render_device_policy("gw-01", SCOPE)
    )


def test_running_again_leaves_an_identical_policy_as_it_is(moto_url: str, iot: Any) -> None:
    assert run(moto_url)[0] == EXIT_OK
    code, result, _ = run(moto_url)
    assert (code, result["status"], result["version_id"]) == (EXIT_OK, "unchanged", "1")
    code, result, _ = run(moto_url, "--update")  # nothing to update either
    assert (code, result["status"]) == (EXIT_OK, "unchanged")
    assert versions(iot) == {"1": True}


def test_same_grants_in_another_layout_count_as_unchanged(moto_url: str, iot: Any) -> None:
    rendered = render_device_policy("gw-01", SCOPE)
    one_per_action = [
        {"Sid": f"S{i}", "Effect": "Allow", "Action": [action], "Resource": resource}
        for i, statement in enumerate(rendered["Statement"])
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
        for resource in [statement["Resource"]]
    ]
    document = {"Version": "2012-10-17", "Statement": one_per_action}
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(document, indent=2))
    code, result, _ = run(moto_url)
    assert (code, result["status"]) == (EXIT_OK, "unchanged")


def test_a_statement_with_not_resource_or_not_action_is_a_difference(moto_url: str, iot: Any) -> None:
    # Such a statement grants far more than any list of actions and resources: never "unchanged".
    broad = render_device_policy("gw-01", SCOPE)
    broad["Statement"].append(
        {"Effect": "Allow", "NotAction": "iot:DeleteThingShadow", "Resource": "*"}  # type: ignore[typeddict-item]
    )
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(broad))
    code, _result, _text = run(moto_url)
    assert code == EXIT_FAILED
    assert default_document(iot) == broad


def test_a_differing_policy_is_reported_and_left_alone(
    moto_url: str, iot: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(INSTALLER_DEFAULT))
    code, _result, text = run(moto_url)
    assert code == EXIT_FAILED
    assert text == ""
    err = capsys.readouterr().err
    assert f"edgeml: refused: IoT policy {POLICY} exists and its default version 1 differs" in err
    assert "it also has iot:Connect on *, iot:Publish on *, iot:Receive on * and 1 more" in err
    assert "it lacks greengrass:GetComponentVersionArtifact on *" in err
    assert "run again with --update" in err
    assert default_document(iot) == INSTALLER_DEFAULT
    assert versions(iot) == {"1": True}


def test_update_makes_the_rendered_document_the_new_default_version(moto_url: str, iot: Any) -> None:
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(INSTALLER_DEFAULT))
    code, result, _ = run(moto_url, "--update")
    assert code == EXIT_OK
    assert result["status"] == "updated"
    assert (result["version_id"], result["replaced_version_id"]) == ("2", "1")
    assert "pruned_version_id" not in result
    assert "it also has iot:Connect on *" in result["difference"]
    assert default_document(iot) == render_device_policy("gw-01", SCOPE)
    assert versions(iot) == {"1": False, "2": True}  # the old version stays, to roll back to
    assert run(moto_url)[1]["status"] == "unchanged"


def test_update_at_the_five_version_limit_deletes_the_oldest_non_default_version(
    moto_url: str, iot: Any
) -> None:
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(INSTALLER_DEFAULT))
    for _ in range(4):
        iot.create_policy_version(
            policyName=POLICY, policyDocument=json.dumps(INSTALLER_DEFAULT), setAsDefault=False
        )
    assert versions(iot) == {"1": True, "2": False, "3": False, "4": False, "5": False}
    code, result, _ = run(moto_url, "--update")
    assert code == EXIT_OK
    # Version 1 is the default, so the oldest one IoT Core lets us delete is 2.
    assert (result["pruned_version_id"], result["version_id"]) == ("2", "6")
    assert versions(iot) == {"1": False, "3": False, "4": False, "5": False, "6": True}
    assert default_document(iot) == render_device_policy("gw-01", SCOPE)


@pytest.mark.parametrize(
    ("thing", "message"),
    [
        ("gw-*", "thing name 'gw-*' contains the IoT policy wildcard *"),
        ("gw-0?", "thing name 'gw-0?' contains the IoT policy wildcard ?"),
        ("gw/01", "'gw/01' is not an IoT thing name"),
        ("site:gw-01", "thing name 'site:gw-01' cannot name its policy"),
    ],
)
def test_names_that_could_widen_or_break_the_policy_exit_2_and_create_nothing(
    moto_url: str, iot: Any, thing: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(moto_url, thing=thing)[0] == EXIT_USAGE
    assert f"edgeml: usage or configuration error: {message}" in capsys.readouterr().err
    assert iot.list_policies()["policies"] == []


def test_a_missing_role_alias_exits_2_before_creating_a_policy(
    moto_url: str, iot: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _result, _ = run(moto_url, "--role-alias", "edgeml-staging-token-exchange")
    assert code == EXIT_USAGE
    assert "role alias 'edgeml-staging-token-exchange' does not exist in us-east-1" in capsys.readouterr().err
    assert iot.list_policies()["policies"] == []


def test_the_fleet_group_of_another_region_exits_2(
    moto_url: str, iot: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "FLEET_THING_GROUP_ARN", f"arn:aws:iot:eu-west-1:{ACCOUNT}:thinggroup/edgeml-dev-fleet"
    )
    assert run(moto_url)[0] == EXIT_USAGE
    assert "FLEET_THING_GROUP_ARN is in account 123456789012, region eu-west-1" in capsys.readouterr().err
    assert iot.list_policies()["policies"] == []
    monkeypatch.setenv("FLEET_THING_GROUP_ARN", f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/edgeml-dev-fleet")
    assert run(moto_url)[1]["status"] == "created"


def test_the_region_option_names_the_policy_s_arns(moto_url: str, iot: Any) -> None:
    west = boto3.client("iot", endpoint_url=moto_url, region_name="eu-west-1")
    west.create_role_alias(
        roleAlias=ALIAS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/r", credentialDurationSeconds=3600
    )
    code, result, _ = run(moto_url, "--region", "eu-west-1")
    assert (code, result["region"]) == (EXIT_OK, "eu-west-1")
    document = json.loads(west.get_policy(policyName=POLICY)["policyDocument"])
    assert document["Statement"][0]["Resource"][0] == f"arn:aws:iot:eu-west-1:{ACCOUNT}:client/gw-01"
    assert iot.list_policies()["policies"] == []  # nothing in us-east-1
