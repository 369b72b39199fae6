"""Synthesizing is slow (jsii + node): each environment is built and synthesized once per session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk.assertions import Template

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
