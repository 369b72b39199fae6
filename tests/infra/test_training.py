"""The SageMaker execution role: exactly datasets/* and code/* in, training-output/* out, key and logs."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from tests.infra.conftest import Synthesized, as_list, flatten, statements_with_sid

BUCKET = "arn:{AWS::Partition}:s3:::edgeml-dev-models-{AWS::AccountId}-{AWS::Region}"
LOGS = "arn:{AWS::Partition}:logs:{AWS::Region}:{AWS::AccountId}:log-group:/aws/sagemaker/TrainingJobs"


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("training")


def _only(template: Template, sid: str) -> dict[str, Any]:
    statements = statements_with_sid(template, sid)
    assert len(statements) == 1, statements
    return statements[0]


def test_role_is_for_sagemaker_only_and_has_no_managed_policies(template: Template) -> None:
    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Action": "sts:AssumeRole",
                        "Effect": "Allow",
                        "Principal": {"Service": "sagemaker.amazonaws.com"},
                    }
                ]
            }
        },
    )
    role = next(iter(template.find_resources("AWS::IAM::Role").values()))
    assert "ManagedPolicyArns" not in role["Properties"]


def test_exact_statements(template: Template) -> None:
    policies = template.find_resources("AWS::IAM::Policy")
    assert len(policies) == 1
    sids = [s["Sid"] for s in next(iter(policies.values()))["Properties"]["PolicyDocument"]["Statement"]]
    assert sids == [
        "ReadDatasets",
        "ListDatasets",
        "ReadTrainingCode",
        "ListTrainingCode",
        "WriteTrainingOutput",
        "UseModelStoreKey",
        "TrainingLogs",
        "TrainingLogStreams",
    ]


def test_reads_datasets(template: Template) -> None:
    read = _only(template, "ReadDatasets")
    assert read["Action"] == "s3:GetObject"
    assert flatten(read["Resource"]) == f"{BUCKET}/datasets/*"

    listing = _only(template, "ListDatasets")
    assert listing["Action"] == "s3:ListBucket"
    assert flatten(listing["Resource"]) == BUCKET
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["datasets/*"]}}


def test_cannot_write_models_whose_upload_would_start_a_canary_deployment(template: Template) -> None:
    """The publisher deploys any models/*/model.onnx written (its S3 rule); a job writes training-output/."""
    policy = next(iter(template.find_resources("AWS::IAM::Policy").values()))
    writes = [
        flatten(s["Resource"])
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(action.startswith("s3:Put") for action in as_list(s["Action"]))
    ]
    assert writes == [f"{BUCKET}/training-output/*"]


def test_reads_the_launchers_code_and_writes_job_output_only(template: Template) -> None:
    """What a launched job (training/launch.py) and a drift retraining (lambdas/retrain) read and write."""
    read = _only(template, "ReadTrainingCode")
    assert (read["Action"], flatten(read["Resource"])) == ("s3:GetObject", f"{BUCKET}/code/*")
    listing = _only(template, "ListTrainingCode")
    assert (listing["Action"], flatten(listing["Resource"])) == ("s3:ListBucket", BUCKET)
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["code/*"]}}
    write = _only(template, "WriteTrainingOutput")
    assert (write["Action"], flatten(write["Resource"])) == ("s3:PutObject", f"{BUCKET}/training-output/*")


def test_prefixes_match_the_launcher() -> None:
    from infra.parts import training_role
    from training import launch_config

    launcher = (launch_config.CODE_PREFIX, launch_config.TRAINING_OUTPUT_PREFIX)
    role = (training_role.CODE_PREFIX, training_role.TRAINING_OUTPUT_PREFIX)
    assert role == tuple(f"{prefix}/" for prefix in launcher)


def test_key_use_is_the_model_store_key(template: Template) -> None:
    key = _only(template, "UseModelStoreKey")
    # Encrypt: a job whose OutputDataConfig.KmsKeyId is this key (CreateTrainingJob's documentation).
    assert key["Action"] == ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"]
    assert flatten(key["Resource"]).startswith("{import:EdgemlDevModelStore:")
    assert "ModelStoreKey" in flatten(key["Resource"])


def test_logs_only_for_training_jobs(template: Template) -> None:
    group = _only(template, "TrainingLogs")
    assert group["Action"] == ["logs:CreateLogGroup", "logs:DescribeLogStreams"]
    assert flatten(group["Resource"]) == LOGS
    streams = _only(template, "TrainingLogStreams")
    assert streams["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert flatten(streams["Resource"]) == f"{LOGS}:log-stream:*"


def test_no_wildcard_actions(template: Template) -> None:
    for statement in next(iter(template.find_resources("AWS::IAM::Policy").values()))["Properties"][
        "PolicyDocument"
    ]["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
