"""The whole app passes AwsSolutionsChecks with no unacknowledged finding, and `python app.py` synthesizes
offline as a plain subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra import nag
from tests.infra.conftest import Synthesized

ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"AwsSolutions-[A-Z]+[0-9]+")
STACK_SUFFIXES = ("ModelStore", "Training", "Fleet", "Publisher", "Ingest", "Lifecycle", "Monitoring")


def _aws_solutions_findings(report: dict[str, Any]) -> list[str]:
    findings = []
    for plugin in report["pluginReports"]:
        for violation in plugin["violations"]:
            if violation["ruleName"].startswith("AwsSolutions-"):
                paths = [c.get("constructPath") for c in violation.get("violatingConstructs", [])]
                findings.append(f"{violation['severity']} {violation['ruleName']} at {paths}")
    return findings


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_no_unacknowledged_cdk_nag_errors_or_warnings(
    env_name: str, dev: Synthesized, prod: Synthesized
) -> None:
    synthesized = dev if env_name == "dev" else prod
    findings = _aws_solutions_findings(synthesized.validation_report())
    assert findings == []
    assert synthesized.synth_error is None


def test_the_checks_are_really_attached(dev: Synthesized) -> None:
    """Guard against a silently detached plugin: the report file only exists when a plugin ran."""
    report = dev.validation_report()
    assert (dev.outdir / "validation-report.json").is_file()
    assert report.get("title") == "Validation Report"


def test_acknowledgements_carry_reasons(dev: Synthesized) -> None:
    """Every acknowledgement in the tree names one rule (or one wildcard finding) and says why."""
    acknowledged: dict[str, str] = {}
    for construct in dev.platform.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == "aws:cdk:acknowledged-rules":
                acknowledged.update(entry.data)
    assert acknowledged, "expected the documented acknowledgements"
    for rule, reason in acknowledged.items():
        assert "AwsSolutions-" in rule
        assert len(reason) > 20, (rule, reason)
    rules = {match.group(0) for rule in acknowledged if (match := RULE.search(rule))}
    assert len(rules) > 0
    # Only these rules are acknowledged anywhere; a new one must be justified here as well.
    # SQS3: the ingest failure and rule-error queues are dead-letter sinks that cdk-nag cannot recognise.
    assert rules <= {"AwsSolutions-IAM4", "AwsSolutions-IAM5", "AwsSolutions-SQS3"}


def test_acknowledge_requires_a_reason(dev: Synthesized) -> None:
    with pytest.raises(ValueError, match=r"acknowledging AwsSolutions-S1 needs a reason"):
        nag.acknowledge(dev.platform.model_store, "AwsSolutions-S1", "  ")


def test_flatten_matches_cdk_nag_format() -> None:
    joined = {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::b/", {"Fn::GetAtt": ["K", "Arn"]}, "/*"]]
    }
    assert nag.flatten_cfn_reference(joined) == "arn:<AWS::Partition>:s3:::b/<K.Arn>/*"
    assert nag.flatten_cfn_reference({"Fn::ImportValue": "S:Out"}) == "S:Out"
    assert nag.flatten_cfn_reference("topic/${iot:ClientId}") == "topic/<iot:ClientId>"
    assert nag.flatten_cfn_reference({"Fn::Select": [0, ["a"]]}) == '{"Fn::Select":[0,["a"]]}'


def test_python_app_py_synthesizes_offline(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "CDK_")) and key not in {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    }
    # Any attempt to reach the network (account lookups, asset publishing) fails fast instead of hanging.
    env |= {
        "CDK_OUTDIR": str(tmp_path),
        "CDK_CONTEXT_JSON": json.dumps({"env": "prod"}),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_DISABLED": "true",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    stacks = {
        name
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    }
    assert stacks == {f"EdgemlProd{suffix}" for suffix in STACK_SUFFIXES}
    for name in stacks:
        assert manifest["artifacts"][name]["environment"] == "aws://unknown-account/unknown-region"
    template = json.loads((tmp_path / "EdgemlProdModelStore.template.json").read_text(encoding="utf-8"))
    buckets = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::Bucket"]
    assert {b["DeletionPolicy"] for b in buckets} == {"Retain"}
