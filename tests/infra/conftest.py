"""Synthesizing is slow (jsii + node): each environment is built and synthesized once per session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk.assertions import Capture, Match, Template

import app


@dataclass(frozen=True)
class Synthesized:
    platform: app.Platform
    outdir: Path
    # Raised by synth when cdk-nag reports an error; kept so the nag test can show it.
    synth_error: Exception | None

    def template(self, stack_attr: str) -> Template:
        return Template.from_stack(getattr(self.platform, stack_attr))

    def validation_report(self) -> dict[str, Any]:
        path = self.outdir / "validation-report.json"
        if not path.exists():
            return {"pluginReports": []}
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return report


def _synthesize(env_name: str, outdir: Path) -> Synthesized:
    platform = app.build(context={"env": env_name}, outdir=str(outdir))
    try:
        platform.app.synth()
    except RuntimeError as exc:
        return Synthesized(platform, outdir, exc)
    return Synthesized(platform, outdir, None)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synthesize("dev", tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synthesize("prod", tmp_path_factory.mktemp("cdk-prod"))


def statements_with_sid(template: Template, sid: str) -> list[dict[str, Any]]:
    """Every IAM statement with ``sid`` across the template's AWS::IAM::Policy resources."""
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Sid") == sid:
                found.append(statement)
    return found


def flatten(value: Any) -> str:
    """A CloudFormation value (string or Fn::Join of strings and Refs) as readable text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return str(delimiter).join(flatten(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return "{" + str(value["Ref"]) + "}"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "{" + ".".join(value["Fn::GetAtt"]) + "}"
    if isinstance(value, dict) and "Fn::ImportValue" in value:
        return "{import:" + flatten(value["Fn::ImportValue"]) + "}"
    return json.dumps(value, sort_keys=True)


# ARN and name prefixes as ``flatten`` renders them in the dev templates.
GG = "arn:{AWS::Partition}:greengrass:{AWS::Region}:{AWS::AccountId}:"
IOT = "arn:{AWS::Partition}:iot:{AWS::Region}:{AWS::AccountId}:"
BUCKET_NAME = "edgeml-dev-models-{AWS::AccountId}-{AWS::Region}"
BUCKET = "arn:{AWS::Partition}:s3:::" + BUCKET_NAME


def as_list(value: Any) -> list[Any]:
    """CloudFormation writes a one-element Action or Resource list as the bare element."""
    return value if isinstance(value, list) else [value]


def resources_of(statement: dict[str, Any]) -> list[str]:
    return [flatten(r) for r in as_list(statement["Resource"])]


def only_function(template: Template) -> dict[str, Any]:
    """The properties of the template's one Lambda function."""
    functions = template.find_resources("AWS::Lambda::Function")
    assert len(functions) == 1
    properties: dict[str, Any] = next(iter(functions.values()))["Properties"]
    return properties


def policy_statements(template: Template, policy_name: str) -> dict[str, dict[str, Any]]:
    """The statements, by Sid, of the one AWS::IAM::Policy whose name matches ``policy_name``."""
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"PolicyName": Match.string_like_regexp(policy_name)}}
    )
    assert len(policies) == 1
    document = next(iter(policies.values()))["Properties"]["PolicyDocument"]
    return {s["Sid"]: s for s in document["Statement"]}


def function_dead_letter_queue(template: Template) -> str:
    """The function's DLQ, which must be the template's only queue and SQS-encrypted; its logical id."""
    queue = Capture()
    template.has_resource_properties(
        "AWS::Lambda::Function", {"DeadLetterConfig": {"TargetArn": {"Fn::GetAtt": [queue, "Arn"]}}}
    )
    queues = template.find_resources("AWS::SQS::Queue")
    assert list(queues) == [queue.as_string()]
    assert queues[queue.as_string()]["Properties"]["SqsManagedSseEnabled"] is True
    return queue.as_string()


def function_log_group(template: Template) -> dict[str, Any]:
    """The log group the function writes to, which must be the template's only one (the whole resource)."""
    group = Capture()
    template.has_resource_properties("AWS::Lambda::Function", {"LoggingConfig": {"LogGroup": {"Ref": group}}})
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert list(groups) == [group.as_string()]
    resource: dict[str, Any] = dict(groups[group.as_string()])
    return resource


def assert_no_wildcard_actions(template: Template) -> None:
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in as_list(statement["Action"]):
                assert "*" not in action, statement


def assert_one_lambda_role_without_managed_policies(template: Template) -> None:
    roles = template.find_resources("AWS::IAM::Role")
    assert len(roles) == 1
    role = next(iter(roles.values()))["Properties"]
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"
    }
