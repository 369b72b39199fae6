"""The lineage registry table (model store stack) and the publisher's access to it."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA
from tests.infra.conftest import Synthesized, flatten


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("model_store")


def _table(template: Template) -> tuple[str, Any]:
    tables = template.find_resources("AWS::DynamoDB::Table")
    assert len(tables) == 1
    logical_id, table = next(iter(tables.items()))
    return logical_id, table


def test_table_matches_the_registry_schema(template: Template) -> None:
    expected = LINEAGE_TABLE_SCHEMA.create_table_kwargs("ignored")
    _, table = _table(template)
    props = table["Properties"]
    assert props["KeySchema"] == expected["KeySchema"]
    assert props["AttributeDefinitions"] == expected["AttributeDefinitions"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert "GlobalSecondaryIndexes" not in props


def test_table_has_pitr_and_a_rotating_customer_managed_key(template: Template) -> None:
    key = Capture()
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {
                "SSEEnabled": True,
                "SSEType": "KMS",
                "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
            },
        },
    )
    key_resource = template.find_resources("AWS::KMS::Key")[key.as_string()]
    assert key_resource["Properties"]["EnableKeyRotation"] is True


def test_prod_keeps_the_registry(prod: Synthesized, template: Template) -> None:
    assert _table(template)[1]["DeletionPolicy"] == "Delete"
    assert _table(prod.template("model_store"))[1]["DeletionPolicy"] == "Retain"


def test_publisher_reads_and_writes_the_registry_only(dev: Synthesized) -> None:
    publisher = dev.template("publisher")
    policies = publisher.find_resources(
        "AWS::IAM::Policy", {"Properties": {"PolicyName": Match.string_like_regexp("PublisherPolicy")}}
    )
    document = next(iter(policies.values()))["Properties"]["PolicyDocument"]
    statements = {s["Sid"]: s for s in document["Statement"]}
    registry = statements["LineageRegistry"]
    assert registry["Action"] == [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
    ]
    # The table's ARN from the model store stack; no "/index/*" (the registry has no index).
    assert "LineageTable" in flatten(registry["Resource"])
    assert not isinstance(registry["Resource"], list)
    key = statements["LineageKey"]
    # DynamoDB decrypts the table key as the caller; kms:Encrypt is its own grant's, not the caller's.
    assert key["Action"] == ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
    assert "LineageKey" in flatten(key["Resource"])


def test_publisher_environment_names_the_registry_and_both_groups(dev: Synthesized) -> None:
    publisher = dev.template("publisher")
    (function,) = publisher.find_resources("AWS::Lambda::Function").values()
    variables = function["Properties"]["Environment"]["Variables"]
    assert "LineageTable" in flatten(variables["LINEAGE_TABLE"])
    assert "CanaryGroup" in flatten(variables["CANARY_THING_GROUP_ARN"])
    assert "FleetGroup" in flatten(variables["FLEET_THING_GROUP_ARN"])
