"""The pure parts of the fake: versions, shape checks, routing, the device-side helpers."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from standins.greengrass_fake import (
    ComponentSpec,
    ConflictError,
    GreengrassV2Fake,
    InstalledComponentReport,
    ResourceNotFoundError,
    ValidationError,
)
from standins.greengrass_fake.errors import (
    ContractViolationError,
    NotImplementedByFakeError,
    UnknownOperationError,
)
from standins.greengrass_fake.protocol import build_routes, parse_request, route
from standins.greengrass_fake.semver import SemVer, is_semver
from standins.greengrass_fake.shapes import validate_output
from tests.standins.greengrass_helpers import group_arn, recipe, thing_arn, version_arn


class _Clock:
    """A controllable clock, so timestamps can be asserted exactly."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def core(service_model, clock) -> GreengrassV2Fake:
    return GreengrassV2Fake(
        region="eu-west-1", account_id="111122223333", clock=clock, service_model=service_model
    )


def test_semver_precedence():
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0",
        "1.0.10",
    ]
    shuffled = [ordered[i] for i in (3, 6, 0, 5, 1, 4, 2)]
    assert sorted(shuffled, key=SemVer) == ordered
    assert SemVer("1.0.0+build.5") == SemVer("1.0.0")
    assert not is_semver("1.0")
    assert not is_semver("01.0.0")
    with pytest.raises(ValueError, match=r"not a semantic version: 'v1\.0\.0'"):
        SemVer("v1.0.0")


def test_arns_use_the_configured_region_and_account(core):
    out = core.handle("CreateComponentVersion", {"inlineRecipe": recipe()})

    assert (
        out["arn"] == "arn:aws:greengrass:eu-west-1:111122223333:components:com.example.Hello:versions:1.0.0"
    )
    assert out["creationTimestamp"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert core.thing_group_arn("fleet") == "arn:aws:iot:eu-west-1:111122223333:thinggroup/fleet"


def test_handle_raises_typed_errors(core):
    core.handle("CreateComponentVersion", {"inlineRecipe": recipe()})
    arn = core.component_version_arn("com.example.Hello", "1.0.0")

    with pytest.raises(ConflictError, match="already exists") as conflict:
        core.handle("CreateComponentVersion", {"inlineRecipe": recipe()})
    with pytest.raises(ResourceNotFoundError, match=r"version 2\.0\.0 not found"):
        core.handle("DescribeComponent", {"arn": arn.replace("1.0.0", "2.0.0")})
    with pytest.raises(ValidationError, match="Specify exactly one of inlineRecipe or lambdaFunction"):
        core.handle("CreateComponentVersion", {})
    with pytest.raises(UnknownOperationError, match="no operation CreateWidget"):
        core.handle("CreateWidget", {})
    with pytest.raises(NotImplementedByFakeError):
        core.handle("GetServiceRoleForAccount", {})

    assert (conflict.value.resource_id, conflict.value.resource_type) == (arn, "ComponentVersion")


def test_lambda_function_source_becomes_a_lambda_component(core):
    out = core.handle(
        "CreateComponentVersion",
        {"lambdaFunction": {"lambdaArn": "arn:aws:lambda:eu-west-1:111122223333:function:scorer:7"}},
    )

    assert (out["componentName"], out["componentVersion"]) == ("scorer", "7.0.0")
    assert core.recipe("scorer", "7.0.0")["ComponentType"] == "aws.greengrass.lambda"
    with pytest.raises(ValidationError, match=r"not \$LATEST"):
        core.handle(
            "CreateComponentVersion",
            {
                "lambdaFunction": {
                    "lambdaArn": "arn:aws:lambda:eu-west-1:111122223333:function:scorer:$LATEST"
                }
            },
        )


def test_fake_refuses_to_return_what_the_output_shape_forbids(core, service_model):
    operation = service_model.operation_model("GetDeployment")

    problems = validate_output(
        operation,
        {"deploymentStatus": "PAUSED", "creationTimestamp": "2026-01-01", "isLatestForTarget": "yes"},
    )

    messages = {p.name: p.message for p in problems}
    assert set(messages) == {"deploymentStatus", "creationTimestamp", "isLatestForTarget"}
    assert messages["deploymentStatus"] == (
        "Value 'PAUSED' at 'deploymentStatus' failed to satisfy constraint: "
        "Member must satisfy enum value set: [ACTIVE, COMPLETED, CANCELED, FAILED, INACTIVE]"
    )
    assert "Member must be of type timestamp" in messages["creationTimestamp"]
    assert "Member must be of type boolean" in messages["isLatestForTarget"]
    # and handle() turns such a result into an internal error rather than answering it
    core._handlers["GetDeployment"] = lambda _params: {"deploymentStatus": "PAUSED"}
    with pytest.raises(ContractViolationError, match="invalid GetDeployment response"):
        core.handle("GetDeployment", {"deploymentId": "d-1"})


def test_routing_prefers_literal_segments_and_decodes_labels(service_model):
    routes = build_routes(service_model)
    arn = version_arn("com.example.Hello", "1.0.0")
    encoded = arn.replace(":", "%3A")

    assert route(routes, "GET", f"/greengrass/v2/components/{encoded}")[0].name == "GetComponent"
    assert (
        route(routes, "GET", f"/greengrass/v2/components/{encoded}/metadata")[0].name == "DescribeComponent"
    )
    assert route(routes, "GET", "/greengrass/v2/components")[0].name == "ListComponents"
    operation, labels = route(routes, "GET", f"/greengrass/v2/components/{encoded}/artifacts/dir/model.onnx")
    assert (operation.name, labels) == (
        "GetComponentVersionArtifact",
        {"arn": arn, "artifactName": "dir/model.onnx"},
    )
    with pytest.raises(UnknownOperationError):
        route(routes, "PATCH", "/greengrass/v2/components")


def test_parse_request_rebuilds_typed_params_from_uri_query_and_body(service_model):
    routes = build_routes(service_model)

    parsed = parse_request(
        routes,
        method="GET",
        raw_path="/greengrass/v2/deployments",
        query="targetArn=arn%3Aaws%3Aiot%3Aus-east-1%3A1%3Athing%2Fx&maxResults=5&historyFilter=ALL",
        headers={},
        body=b"",
    )
    untag = parse_request(
        routes,
        method="DELETE",
        raw_path="/tags/arn%3Aaws%3Agreengrass%3Aus-east-1%3A1%3AcoreDevices%3Agw",
        query="tagKeys=a&tagKeys=b",
        headers={},
        body=b"",
    )

    assert parsed.operation == "ListDeployments"
    assert parsed.params == {
        "targetArn": "arn:aws:iot:us-east-1:1:thing/x",
        "maxResults": 5,
        "historyFilter": "ALL",
    }
    assert untag.params == {
        "resourceArn": "arn:aws:greengrass:us-east-1:1:coreDevices:gw",
        "tagKeys": ["a", "b"],
    }
    with pytest.raises(ValidationError, match="Unknown query parameter 'historyFiltre'"):
        parse_request(
            routes,
            method="GET",
            raw_path="/greengrass/v2/deployments",
            query="historyFiltre=ALL",
            headers={},
            body=b"",
        )


def test_desired_deployments_merge_thing_and_group_targets(core, clock):
    core.handle("CreateComponentVersion", {"inlineRecipe": recipe()})
    core.register_core_device("gw-1")
    core.add_thing_to_group("fleet", "gw-1")
    merge = json.dumps({"model": {"version": "1.0.3"}})
    components = {"com.example.Hello": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": merge}}}
    group_id = core.handle("CreateDeployment", {"targetArn": group_arn("fleet"), "components": components})
    clock.tick()
    thing_id = core.handle(
        "CreateDeployment",
        {
            "targetArn": thing_arn("gw-1"),
            "components": {"aws.greengrass.Cli": {"componentVersion": "2.14.0"}},
            "deploymentPolicies": {"configurationValidationPolicy": {"timeoutInSeconds": 5}},
        },
    )

    desired = core.desired_deployments("gw-1")

    assert [d.deployment_id for d in desired] == [group_id["deploymentId"], thing_id["deploymentId"]]
    assert desired[0].components == {
        "com.example.Hello": ComponentSpec(version="1.0.0", merge={"model": {"version": "1.0.3"}})
    }
    assert desired[0].failure_handling_policy == "ROLLBACK"
    # The service default; the device runner waits this long for configuration validity reports.
    assert [d.configuration_validation_timeout_s for d in desired] == [30, 5]
    assert core.desired_deployments("not-in-any-group") == []


def test_report_timestamps_move_only_on_change(core, clock):
    core.handle("CreateComponentVersion", {"inlineRecipe": recipe()})
    deployment = core.handle(
        "CreateDeployment",
        {"targetArn": thing_arn("gw-1"), "components": {"com.example.Hello": {"componentVersion": "1.0.0"}}},
    )
    start = clock.now
    core.report_device_status(
        "gw-1",
        deployment["deploymentId"],
        "IN_PROGRESS",
        [InstalledComponentReport("com.example.Hello", "1.0.0", "STARTING")],
    )
    clock.tick(5)
    core.report_installed_components(
        "gw-1", [InstalledComponentReport("com.example.Hello", "1.0.0", "STARTING")]
    )

    installed = core.handle("ListInstalledComponents", {"coreDeviceThingName": "gw-1"})[
        "installedComponents"
    ][0]
    assert installed["lastStatusChangeTimestamp"] == start
    assert installed["lastReportedTimestamp"] == start + dt.timedelta(seconds=5)
    assert installed["lastInstallationSource"] == deployment["deploymentId"]


def test_device_reports_are_checked(core):
    core.handle("CreateComponentVersion", {"inlineRecipe": recipe()})
    deployment = core.handle(
        "CreateDeployment",
        {"targetArn": thing_arn("gw-1"), "components": {"com.example.Hello": {"componentVersion": "1.0.0"}}},
    )

    with pytest.raises(ValidationError, match="Unknown execution status 'DONE'"):
        core.report_device_status("gw-1", deployment["deploymentId"], "DONE")
    with pytest.raises(ResourceNotFoundError, match="Deployment nope not found"):
        core.report_device_status("gw-1", "nope", "SUCCEEDED")
    with pytest.raises(ValidationError, match="Unknown lifecycle state 'UP'"):
        core.report_installed_components("gw-1", [InstalledComponentReport("c", "1.0.0", "UP")])
