"""A real boto3 `greengrassv2` client against the served fake."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from standins.greengrass_fake import InstalledComponentReport
from tests.standins.greengrass_helpers import (
    ACCOUNT,
    REGION,
    group_arn,
    make_client,
    recipe,
    thing_arn,
    version_arn,
)

COMPONENT_ARN = f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:com.example.Hello"


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response = excinfo.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


# ---------------------------------------------------------------- components


def test_create_component_version_returns_arn_and_deployable_status(gg):
    before = dt.datetime.now(dt.UTC)
    out = gg.create_component_version(inlineRecipe=recipe())

    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert out["arn"] == version_arn("com.example.Hello", "1.0.0")
    assert (out["componentName"], out["componentVersion"]) == ("com.example.Hello", "1.0.0")
    assert out["status"]["componentState"] == "DEPLOYABLE"
    assert before - dt.timedelta(seconds=1) <= out["creationTimestamp"] <= dt.datetime.now(dt.UTC)


def test_describe_component_reads_recipe_metadata(gg):
    arn = gg.create_component_version(inlineRecipe=recipe(), tags={"team": "edge"})["arn"]

    out = gg.describe_component(arn=arn)

    assert out["componentName"] == "com.example.Hello"
    assert out["publisher"] == "Example"
    assert out["description"] == "Says hello"
    assert out["platforms"] == [{"name": "linux", "attributes": {"os": "linux"}}]
    assert out["tags"] == {"team": "edge"}
    assert out["status"]["componentState"] == "DEPLOYABLE"


def test_yaml_recipe_is_parsed_and_rendered_back_in_either_format(gg):
    yaml_recipe = b"""\
RecipeFormatVersion: 2020-01-25
ComponentName: com.example.Yaml
ComponentVersion: '2.1.0'
ComponentConfiguration:
  DefaultConfiguration:
    since: 2024-01-01
Manifests:
  - Platform: {os: linux}
    Lifecycle: {Run: python3 -m app}
"""
    arn = gg.create_component_version(inlineRecipe=yaml_recipe)["arn"]

    as_json = gg.get_component(arn=arn, recipeOutputFormat="JSON")
    as_yaml = gg.get_component(arn=arn, recipeOutputFormat="YAML")

    assert arn == version_arn("com.example.Yaml", "2.1.0")
    assert as_json["recipeOutputFormat"] == "JSON"
    document = json.loads(as_json["recipe"])
    assert document["RecipeFormatVersion"] == "2020-01-25"
    # Unquoted dates stay the string written, not a YAML timestamp.
    assert document["ComponentConfiguration"]["DefaultConfiguration"]["since"] == "2024-01-01"
    assert yaml.safe_load(as_yaml["recipe"])["Manifests"] == document["Manifests"]


def test_get_component_defaults_to_json(gg):
    arn = gg.create_component_version(inlineRecipe=recipe())["arn"]

    out = gg.get_component(arn=arn)

    assert out["recipeOutputFormat"] == "JSON"
    assert json.loads(out["recipe"]) == json.loads(recipe())


def test_same_name_and_version_again_is_a_conflict(gg):
    gg.create_component_version(inlineRecipe=recipe())

    with pytest.raises(ClientError) as excinfo:
        gg.create_component_version(inlineRecipe=recipe(ComponentDescription="changed"))

    code, message, status = _error(excinfo)
    assert (code, status) == ("ConflictException", 409)
    assert message == "Component com.example.Hello version 1.0.0 already exists"
    assert excinfo.value.response["resourceId"] == version_arn("com.example.Hello", "1.0.0")


def test_retry_with_the_same_client_token_is_idempotent(gg):
    first = gg.create_component_version(inlineRecipe=recipe(), clientToken="token-1")
    second = gg.create_component_version(inlineRecipe=recipe(), clientToken="token-1")

    assert second["arn"] == first["arn"]
    assert second["creationTimestamp"] == first["creationTimestamp"]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b'{"RecipeFormatVersion": "2020-01-25", "ComponentName": "a"}', "ComponentVersion is required"),
        (recipe(version="1.0"), "ComponentVersion '1.0' is not a semantic version"),
        (recipe(RecipeFormatVersion="2019-01-01"), "RecipeFormatVersion must be '2020-01-25'"),
        (b"{not json", "cannot parse recipe"),
        (b"- just\n- a list\n", "must be a JSON or YAML object"),
    ],
)
def test_invalid_recipe_is_a_validation_error(gg, document, expected):
    with pytest.raises(ClientError) as excinfo:
        gg.create_component_version(inlineRecipe=document)

    code, message, status = _error(excinfo)
    assert (code, status) == ("ValidationException", 400)
    assert expected in message


def test_recipe_with_two_artifacts_of_the_same_file_name_is_refused(gg):
    manifests = [
        {
            "Platform": {"os": "linux"},
            "Artifacts": [{"URI": "s3://a/x/model.onnx"}, {"URI": "s3://b/y/model.onnx"}],
        }
    ]
    with pytest.raises(ClientError) as excinfo:
        gg.create_component_version(inlineRecipe=recipe(Manifests=manifests))

    assert _error(excinfo)[0] == "ValidationException"
    assert "artifact file name 'model.onnx' appears twice" in _error(excinfo)[1]


def test_list_component_versions_orders_by_semver_greatest_first(gg):
    for version in ["1.0.0", "1.10.0", "1.2.0", "1.2.0-rc.1", "2.0.0", "1.2.0-alpha"]:
        gg.create_component_version(inlineRecipe=recipe(version=version))

    out = gg.list_component_versions(arn=COMPONENT_ARN)

    assert [v["componentVersion"] for v in out["componentVersions"]] == [
        "2.0.0",
        "1.10.0",
        "1.2.0",
        "1.2.0-rc.1",
        "1.2.0-alpha",
        "1.0.0",
    ]
    assert out["componentVersions"][0]["arn"] == version_arn("com.example.Hello", "2.0.0")
    assert "nextToken" not in out


def test_list_component_versions_paginates(gg):
    for patch in range(5):
        gg.create_component_version(inlineRecipe=recipe(version=f"1.0.{patch}"))

    first = gg.list_component_versions(arn=COMPONENT_ARN, maxResults=2)
    pages = list(
        gg.get_paginator("list_component_versions").paginate(
            arn=COMPONENT_ARN, PaginationConfig={"PageSize": 2}
        )
    )

    assert [v["componentVersion"] for v in first["componentVersions"]] == ["1.0.4", "1.0.3"]
    assert first["nextToken"]
    assert [len(p["componentVersions"]) for p in pages] == [2, 2, 1]
    assert [v["componentVersion"] for p in pages for v in p["componentVersions"]] == [
        "1.0.4",
        "1.0.3",
        "1.0.2",
        "1.0.1",
        "1.0.0",
    ]


def test_list_component_versions_of_unknown_component_is_not_found(gg):
    with pytest.raises(ClientError) as excinfo:
        gg.list_component_versions(arn=COMPONENT_ARN)

    assert _error(excinfo)[0] == "ResourceNotFoundException"


def test_list_components_reports_the_latest_version(gg):
    gg.create_component_version(inlineRecipe=recipe(version="1.0.0"))
    gg.create_component_version(inlineRecipe=recipe(version="1.1.0"))
    gg.create_component_version(inlineRecipe=recipe(name="com.example.Other"))

    out = gg.list_components()
    public = gg.list_components(scope="PUBLIC")

    by_name = {c["componentName"]: c for c in out["components"]}
    assert set(by_name) == {"com.example.Hello", "com.example.Other"}
    assert by_name["com.example.Hello"]["arn"] == COMPONENT_ARN
    assert by_name["com.example.Hello"]["latestVersion"]["componentVersion"] == "1.1.0"
    assert by_name["com.example.Hello"]["latestVersion"]["publisher"] == "Example"
    assert public["components"] == []


def test_delete_component_removes_one_version(gg):
    gg.create_component_version(inlineRecipe=recipe(version="1.0.0"))
    arn = gg.create_component_version(inlineRecipe=recipe(version="1.1.0"))["arn"]

    out = gg.delete_component(arn=arn)

    assert out["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as excinfo:
        gg.describe_component(arn=arn)
    assert _error(excinfo)[:2] == (
        "ResourceNotFoundException",
        "Component com.example.Hello version 1.1.0 not found",
    )
    remaining = gg.list_component_versions(arn=COMPONENT_ARN)["componentVersions"]
    assert [v["componentVersion"] for v in remaining] == ["1.0.0"]
    with pytest.raises(ClientError) as again:
        gg.delete_component(arn=arn)
    assert _error(again)[0] == "ResourceNotFoundException"


# ---------------------------------------------------------------- deployments


def _deploy(gg, target: str, version: str = "1.0.0", **kwargs):
    components = {"com.example.Hello": {"componentVersion": version}}
    return gg.create_deployment(targetArn=target, components=components, **kwargs)


def test_create_and_get_deployment(gg):
    gg.create_component_version(inlineRecipe=recipe())
    merge = json.dumps({"model": {"version": "1.0.3"}})
    out = gg.create_deployment(
        targetArn=group_arn("fleet"),
        deploymentName="fleet-rollout",
        components={
            "com.example.Hello": {
                "componentVersion": "1.0.0",
                "configurationUpdate": {"merge": merge, "reset": ["/old"]},
            },
            "aws.greengrass.Nucleus": {"componentVersion": "2.14.0"},
        },
        deploymentPolicies={"failureHandlingPolicy": "DO_NOTHING"},
        tags={"purpose": "test"},
    )

    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert out["iotJobArn"] == f"arn:aws:iot:{REGION}:{ACCOUNT}:job/{out['iotJobId']}"
    got = gg.get_deployment(deploymentId=out["deploymentId"])
    assert got["targetArn"] == group_arn("fleet")
    assert got["deploymentName"] == "fleet-rollout"
    assert got["deploymentStatus"] == "ACTIVE"
    assert got["isLatestForTarget"] is True
    assert got["revisionId"] == "1"
    assert got["iotJobId"] == out["iotJobId"]
    assert got["components"]["com.example.Hello"]["configurationUpdate"] == {
        "merge": merge,
        "reset": ["/old"],
    }
    assert got["deploymentPolicies"] == {
        "failureHandlingPolicy": "DO_NOTHING",
        "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
        "configurationValidationPolicy": {"timeoutInSeconds": 30},
    }
    assert got["tags"] == {"purpose": "test"}


def test_deployment_of_a_missing_component_version_is_not_found(gg):
    gg.create_component_version(inlineRecipe=recipe(version="1.0.0"))

    with pytest.raises(ClientError) as excinfo:
        _deploy(gg, group_arn("fleet"), version="9.9.9")

    code, message, status = _error(excinfo)
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert message == "Component com.example.Hello version 9.9.9 not found"


def test_deployment_after_the_version_was_deleted_is_not_found(gg):
    arn = gg.create_component_version(inlineRecipe=recipe())["arn"]
    gg.delete_component(arn=arn)

    with pytest.raises(ClientError) as excinfo:
        _deploy(gg, group_arn("fleet"))

    assert _error(excinfo)[0] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("merge", "expected"),
    [
        ("{not json", "configurationUpdate.merge is not valid JSON"),
        ('["a list"]', "configurationUpdate.merge must be a JSON object"),
    ],
)
def test_merge_must_be_a_json_object_string(gg, merge, expected):
    gg.create_component_version(inlineRecipe=recipe())
    components = {"com.example.Hello": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": merge}}}

    with pytest.raises(ClientError) as excinfo:
        gg.create_deployment(targetArn=group_arn("fleet"), components=components)

    assert _error(excinfo)[0] == "ValidationException"
    assert expected in _error(excinfo)[1]


def test_new_deployment_replaces_the_previous_one_for_the_target(gg):
    gg.create_component_version(inlineRecipe=recipe(version="1.0.0"))
    gg.create_component_version(inlineRecipe=recipe(version="1.1.0"))
    first = _deploy(gg, group_arn("fleet"), "1.0.0")["deploymentId"]
    other = _deploy(gg, group_arn("other"), "1.0.0")["deploymentId"]
    second = _deploy(gg, group_arn("fleet"), "1.1.0")["deploymentId"]

    latest = gg.list_deployments(targetArn=group_arn("fleet"), historyFilter="LATEST_ONLY")["deployments"]
    history = gg.list_deployments(targetArn=group_arn("fleet"), historyFilter="ALL")["deployments"]
    default = gg.list_deployments()["deployments"]

    assert [d["deploymentId"] for d in latest] == [second]
    assert latest[0]["revisionId"] == "2"
    assert [(d["deploymentId"], d["isLatestForTarget"]) for d in history] == [(second, True), (first, False)]
    assert gg.get_deployment(deploymentId=first)["deploymentStatus"] == "INACTIVE"
    assert gg.get_deployment(deploymentId=other)["isLatestForTarget"] is True
    # Without a filter the service lists only the latest deployment of each target.
    assert {d["deploymentId"] for d in default} == {second, other}


def test_list_deployments_paginates_and_rejects_a_forged_token(gg, gg_unchecked):
    gg.create_component_version(inlineRecipe=recipe())
    created = [_deploy(gg, thing_arn(f"dev-{i}"))["deploymentId"] for i in range(5)]

    first = gg.list_deployments(maxResults=2)
    second = gg.list_deployments(maxResults=2, nextToken=first["nextToken"])
    third = gg.list_deployments(maxResults=2, nextToken=second["nextToken"])

    listed = [d["deploymentId"] for page in (first, second, third) for d in page["deployments"]]
    assert listed == list(reversed(created))  # newest first
    assert "nextToken" not in third
    with pytest.raises(ClientError) as excinfo:
        gg.list_deployments(nextToken="not-a-token")
    assert _error(excinfo)[:2] == ("ValidationException", "Invalid nextToken: not-a-token")


def test_cancel_deployment(gg):
    gg.create_component_version(inlineRecipe=recipe())
    deployment_id = _deploy(gg, group_arn("fleet"))["deploymentId"]

    out = gg.cancel_deployment(deploymentId=deployment_id)

    assert out["message"] == f"Deployment {deployment_id} canceled for devices that have not received it"
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "CANCELED"
    with pytest.raises(ClientError) as again:
        gg.cancel_deployment(deploymentId=deployment_id)
    assert _error(again)[:2] == (
        "ConflictException",
        f"Deployment {deployment_id} is CANCELED and cannot be canceled",
    )
    with pytest.raises(ClientError) as missing:
        gg.cancel_deployment(deploymentId="no-such-deployment")
    assert _error(missing)[0] == "ResourceNotFoundException"


def test_active_deployment_must_be_canceled_before_delete(gg):
    gg.create_component_version(inlineRecipe=recipe())
    deployment_id = _deploy(gg, group_arn("fleet"))["deploymentId"]

    with pytest.raises(ClientError) as excinfo:
        gg.delete_deployment(deploymentId=deployment_id)
    gg.cancel_deployment(deploymentId=deployment_id)
    gg.delete_deployment(deploymentId=deployment_id)

    assert _error(excinfo)[0] == "ConflictException"
    with pytest.raises(ClientError) as gone:
        gg.get_deployment(deploymentId=deployment_id)
    assert _error(gone)[0] == "ResourceNotFoundException"


def test_subdeployment_must_target_a_thing_group(gg):
    gg.create_component_version(inlineRecipe=recipe())

    with pytest.raises(ClientError) as excinfo:
        _deploy(gg, thing_arn("dev-1"), parentTargetArn=group_arn("fleet"))
    sub = _deploy(gg, group_arn("canary"), parentTargetArn=group_arn("fleet"))["deploymentId"]

    assert _error(excinfo)[:2] == (
        "ValidationException",
        "A subdeployment (parentTargetArn) must target a thing group",
    )
    listed = gg.list_deployments(parentTargetArn=group_arn("fleet"))["deployments"]
    assert [(d["deploymentId"], d["parentTargetArn"]) for d in listed] == [(sub, group_arn("fleet"))]


# ---------------------------------------------------------------- core devices


def test_device_reports_flow_into_effective_deployments_and_installed_components(gg, fake):
    gg.create_component_version(inlineRecipe=recipe())
    fake.register_core_device("gw-1")
    fake.register_core_device("gw-2")
    fake.register_core_device("outsider")
    fake.set_thing_group_members("fleet", ["gw-1", "gw-2"])
    deployment_id = _deploy(gg, group_arn("fleet"), deploymentName="v1")["deploymentId"]

    queued = gg.list_effective_deployments(coreDeviceThingName="gw-1")["effectiveDeployments"]
    assert [(e["deploymentId"], e["coreDeviceExecutionStatus"]) for e in queued] == [
        (deployment_id, "QUEUED")
    ]
    assert gg.list_effective_deployments(coreDeviceThingName="outsider")["effectiveDeployments"] == []

    fake.report_device_status(
        "gw-1",
        deployment_id,
        "SUCCEEDED",
        [
            InstalledComponentReport("com.example.Hello", "1.0.0", "RUNNING"),
            InstalledComponentReport("aws.greengrass.Nucleus", "2.14.0", "FINISHED", is_root=False),
        ],
    )

    effective = gg.list_effective_deployments(coreDeviceThingName="gw-1")["effectiveDeployments"]
    assert effective[0]["coreDeviceExecutionStatus"] == "SUCCEEDED"
    assert effective[0]["deploymentName"] == "v1"
    assert effective[0]["targetArn"] == group_arn("fleet")
    assert effective[0]["modifiedTimestamp"] >= effective[0]["creationTimestamp"]
    root = gg.list_installed_components(coreDeviceThingName="gw-1")["installedComponents"]
    everything = gg.list_installed_components(coreDeviceThingName="gw-1", topologyFilter="ALL")[
        "installedComponents"
    ]
    assert [(c["componentName"], c["lifecycleState"]) for c in root] == [("com.example.Hello", "RUNNING")]
    assert root[0]["lastInstallationSource"] == deployment_id
    assert {c["componentName"] for c in everything} == {"com.example.Hello", "aws.greengrass.Nucleus"}
    # A group deployment's job is continuous: it stays ACTIVE whatever one device reports.
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "ACTIVE"


def test_broken_component_makes_the_core_device_unhealthy(gg, fake):
    gg.create_component_version(inlineRecipe=recipe())
    deployment_id = _deploy(gg, thing_arn("gw-1"))["deploymentId"]
    fake.register_core_device("gw-1", core_version="2.13.0", architecture="aarch64")

    fake.report_device_status(
        "gw-1",
        deployment_id,
        "FAILED",
        [InstalledComponentReport("com.example.Hello", "1.0.0", "BROKEN", details="exited 3 times")],
        reason="COMPONENT_BROKEN",
        error_types=["COMPONENT_ERROR"],
    )

    device = gg.get_core_device(coreDeviceThingName="gw-1")
    assert (device["status"], device["coreVersion"], device["architecture"]) == (
        "UNHEALTHY",
        "2.13.0",
        "aarch64",
    )
    effective = gg.list_effective_deployments(coreDeviceThingName="gw-1")["effectiveDeployments"][0]
    assert effective["reason"] == "COMPONENT_BROKEN"
    assert effective["statusDetails"] == {"errorStack": [], "errorTypes": ["COMPONENT_ERROR"]}
    installed = gg.list_installed_components(coreDeviceThingName="gw-1")["installedComponents"][0]
    assert installed["lifecycleStateDetails"] == "exited 3 times"
    # A thing's deployment is one job execution, so it ends with the device's result.
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "FAILED"


def test_thing_deployment_completes_when_the_device_succeeds(gg, fake):
    gg.create_component_version(inlineRecipe=recipe())
    deployment_id = _deploy(gg, thing_arn("gw-1"))["deploymentId"]

    fake.report_device_status("gw-1", deployment_id, "SUCCEEDED")  # first report registers the device

    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "COMPLETED"
    assert gg.get_core_device(coreDeviceThingName="gw-1")["status"] == "HEALTHY"


def test_list_core_devices_filters_by_group_and_status(gg, fake):
    for name in ["gw-1", "gw-2", "gw-3"]:
        fake.register_core_device(name)
    fake.set_thing_group_members("fleet", ["gw-1", "gw-2"])
    fake.report_installed_components(
        "gw-2", [InstalledComponentReport("com.example.Hello", "1.0.0", "ERRORED")]
    )

    in_fleet = gg.list_core_devices(thingGroupArn=group_arn("fleet"))["coreDevices"]
    unhealthy = gg.list_core_devices(status="UNHEALTHY")["coreDevices"]
    paged = gg.list_core_devices(maxResults=2)

    assert [d["coreDeviceThingName"] for d in in_fleet] == ["gw-1", "gw-2"]
    assert [d["coreDeviceThingName"] for d in unhealthy] == ["gw-2"]
    assert len(paged["coreDevices"]) == 2
    assert "nextToken" in paged


def test_unknown_core_device_is_not_found(gg):
    with pytest.raises(ClientError) as excinfo:
        gg.get_core_device(coreDeviceThingName="ghost")
    with pytest.raises(ClientError) as effective:
        gg.list_effective_deployments(coreDeviceThingName="ghost")

    assert _error(excinfo)[:2] == ("ResourceNotFoundException", "Core device ghost not found")
    assert _error(effective)[0] == "ResourceNotFoundException"


def test_canceling_leaves_running_devices_alone_and_cancels_queued_ones(gg, fake):
    gg.create_component_version(inlineRecipe=recipe())
    fake.register_core_device("gw-1")
    fake.register_core_device("gw-2")
    fake.set_thing_group_members("fleet", ["gw-1", "gw-2"])
    deployment_id = _deploy(gg, group_arn("fleet"))["deploymentId"]
    fake.report_device_status("gw-1", deployment_id, "IN_PROGRESS")

    gg.cancel_deployment(deploymentId=deployment_id)

    status = {
        name: gg.list_effective_deployments(coreDeviceThingName=name)["effectiveDeployments"][0][
            "coreDeviceExecutionStatus"
        ]
        for name in ["gw-1", "gw-2"]
    }
    assert status == {"gw-1": "IN_PROGRESS", "gw-2": "CANCELED"}
    assert fake.desired_deployments("gw-2") == []


# ---------------------------------------------------------------- tags


def test_tag_list_and_untag_a_component_version(gg):
    arn = gg.create_component_version(inlineRecipe=recipe(), tags={"a": "1"})["arn"]

    gg.tag_resource(resourceArn=arn, tags={"b": "2"})
    both = gg.list_tags_for_resource(resourceArn=arn)["tags"]
    gg.untag_resource(resourceArn=arn, tagKeys=["a"])
    after = gg.list_tags_for_resource(resourceArn=arn)["tags"]

    assert both == {"a": "1", "b": "2"}
    assert after == {"b": "2"}


def test_tagging_an_unknown_resource_or_a_reserved_key_fails(gg):
    arn = gg.create_component_version(inlineRecipe=recipe())["arn"]
    missing = version_arn("com.example.Hello", "7.0.0")

    with pytest.raises(ClientError) as not_found:
        gg.tag_resource(resourceArn=missing, tags={"a": "1"})
    with pytest.raises(ClientError) as reserved:
        gg.tag_resource(resourceArn=arn, tags={"aws:owner": "me"})

    assert _error(not_found)[:2] == ("ResourceNotFoundException", f"Resource {missing} not found")
    assert _error(reserved)[:2] == (
        "ValidationException",
        "Tag keys with the prefix aws: are reserved: aws:owner",
    )


# ---------------------------------------------------------------- request validation


def test_wrong_type_is_a_validation_error(gg_unchecked):
    with pytest.raises(ClientError) as excinfo:
        gg_unchecked.create_deployment(targetArn=group_arn("fleet"), deploymentName=123)

    code, message, status = _error(excinfo)
    assert (code, status) == ("ValidationException", 400)
    assert message == (
        "1 validation error detected: Value 123 at 'deploymentName' failed to satisfy constraint: "
        "Member must be of type string (got int)"
    )
    assert excinfo.value.response["fields"] == [
        {"name": "deploymentName", "message": message.split(": ", 1)[1]}
    ]


def test_missing_required_member_is_a_validation_error(gg_unchecked):
    with pytest.raises(ClientError) as excinfo:
        gg_unchecked.create_deployment(deploymentName="no-target")

    assert _error(excinfo)[:2] == (
        "ValidationException",
        "1 validation error detected: Value null at 'targetArn' failed to satisfy constraint: "
        "Member must not be null",
    )


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.list_deployments(historyFilter="SOMETIMES"), "historyFilter"),
        (
            lambda c: c.get_component(arn=version_arn("a", "1.0.0"), recipeOutputFormat="XML"),
            "recipeOutputFormat",
        ),
        (
            lambda c: c.list_installed_components(coreDeviceThingName="gw", topologyFilter="LEAF"),
            "topologyFilter",
        ),
    ],
)
def test_bad_enum_is_a_validation_error(gg_unchecked, call, field):
    with pytest.raises(ClientError) as excinfo:
        call(gg_unchecked)

    code, message, _ = _error(excinfo)
    assert code == "ValidationException"
    assert f"at '{field}' failed to satisfy constraint: Member must satisfy enum value set" in message


def test_out_of_range_and_pattern_violations_are_reported_together(gg_unchecked):
    with pytest.raises(ClientError) as excinfo:
        gg_unchecked.create_deployment(
            targetArn="arn:aws:iot:us-east-1:123456789012:certificate/abc",
            iotJobConfiguration={
                "jobExecutionsRolloutConfig": {"maximumPerMinute": 5000},
            },
        )

    message = _error(excinfo)[1]
    assert message.startswith("2 validation errors detected: ")
    assert (
        "at 'targetArn' failed to satisfy constraint: Member must satisfy regular expression pattern"
        in message
    )
    assert (
        "Value 5000 at 'iotJobConfiguration.jobExecutionsRolloutConfig.maximumPerMinute' failed to satisfy "
        "constraint: Member must be <= 1000" in message
    )


def test_misspelled_member_reaches_the_fake_and_is_refused(running):
    # botocore itself raises KeyError for an unknown name even with parameter_validation=False, so the
    # misspelling is made on the wire, after serialization, as a hand-written client would send it.
    gg = make_client(running.endpoint_url)

    def misspell(request, **_kwargs):
        request.data = request.data.replace(b'"componentVersion"', b'"componentVerison"')

    gg.meta.events.register("before-sign.greengrassv2.CreateDeployment", misspell)

    with pytest.raises(ClientError) as excinfo:
        gg.create_deployment(
            targetArn=group_arn("fleet"), components={"com.example.Hello": {"componentVersion": "1.0.0"}}
        )

    message = _error(excinfo)[1]
    assert _error(excinfo)[0] == "ValidationException"
    assert "Value null at 'components.com.example.Hello.componentVersion'" in message
    assert (
        "Unknown parameter at 'components.com.example.Hello.componentVerison', must be one of: "
        "componentVersion, configurationUpdate, runWith" in message
    )


def _raw(
    running, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(running.endpoint_url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def test_unknown_top_level_member_and_bad_base64_in_raw_request(running):
    status, headers, body = _raw(
        running,
        "POST",
        "/greengrass/v2/createComponentVersion",
        json.dumps({"inlineRecipe": "%%%not-base64", "recipeName": "x"}).encode(),
    )

    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert body["reason"] == "FIELD_VALIDATION_FAILED"
    assert {f["name"] for f in body["fields"]} == {"inlineRecipe"}
    assert "Member must be base64" in body["message"]

    status, _, body = _raw(
        running, "POST", "/greengrass/v2/createComponentVersion", json.dumps({"recipeName": "x"}).encode()
    )
    assert status == 400
    assert body["message"].startswith("1 validation error detected: Unknown parameter at 'recipeName'")


def test_unparseable_body_and_unknown_route(running):
    status, headers, body = _raw(running, "POST", "/greengrass/v2/deployments", b"{oops")
    assert (status, headers["x-amzn-ErrorType"], body["reason"]) == (
        400,
        "ValidationException",
        "CANNOT_PARSE",
    )

    status, headers, _ = _raw(running, "GET", "/greengrass/v3/nothing")
    assert (status, headers["x-amzn-ErrorType"]) == (404, "UnknownOperationException")


def test_operation_outside_the_fake_says_so(gg):
    with pytest.raises(ClientError) as excinfo:
        gg.get_connectivity_info(thingName="gw-1")

    code, message, status = _error(excinfo)
    assert (code, status) == ("NotImplementedByFake", 501)
    assert message == "GetConnectivityInfo is in the service model but not in this fake"


def test_endpoint_from_environment_variable(running, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_GREENGRASSV2", running.endpoint_url)
    client = boto3.client("greengrassv2", region_name=REGION)

    client.create_component_version(inlineRecipe=recipe())

    assert client.list_components()["components"][0]["componentName"] == "com.example.Hello"
