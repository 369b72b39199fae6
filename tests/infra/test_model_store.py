"""The model store bucket: encryption, versioning, public access, TLS, lifecycle, logs, events."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from tests.infra.conftest import Synthesized, flatten


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("model_store")


def _model_bucket(template: Template) -> dict[str, Any]:
    buckets = template.find_resources(
        "AWS::S3::Bucket", {"Properties": {"VersioningConfiguration": {"Status": "Enabled"}}}
    )
    assert len(buckets) == 1, buckets
    properties: dict[str, Any] = next(iter(buckets.values()))["Properties"]
    return properties


def test_bucket_encrypted_with_rotating_customer_managed_key(template: Template) -> None:
    key_id = Capture()
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    )
    keys = template.find_resources("AWS::KMS::Key")
    assert keys[key_id.as_string()]["Properties"]["EnableKeyRotation"] is True


def test_bucket_name_is_prefix_account_region(template: Template) -> None:
    assert (
        flatten(_model_bucket(template)["BucketName"]) == "edgeml-dev-models-{AWS::AccountId}-{AWS::Region}"
    )


def test_public_access_blocked_and_ownership_enforced_on_both_buckets(template: Template) -> None:
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert "BucketEncryption" in props


def test_every_bucket_policy_denies_plain_http(template: Template) -> None:
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        tls = [s for s in statements if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
        assert len(tls) == 1, statements
        assert tls[0]["Effect"] == "Deny"
        assert tls[0]["Action"] == "s3:*"
        assert tls[0]["Principal"] == {"AWS": "*"}


def test_lifecycle_expires_noncurrent_versions_and_aborts_uploads(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "expire-noncurrent-versions",
                        "Status": "Enabled",
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
        },
    )


def test_access_logs_go_to_the_sse_s3_logs_bucket(template: Template) -> None:
    logs_bucket = Capture()
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": logs_bucket},
                "LogFilePrefix": "model-store/",
            },
        },
    )
    logs = template.find_resources("AWS::S3::Bucket")[logs_bucket.as_string()]["Properties"]
    encryption = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    # Server access logging cannot deliver into an SSE-KMS bucket.
    assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert "LoggingConfiguration" not in logs


def test_eventbridge_notifications_enabled(template: Template) -> None:
    template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {"NotificationConfiguration": {"EventBridgeConfiguration": {}}},
    )


def test_dev_destroys_and_empties_buckets(template: Template) -> None:
    buckets = template.find_resources("AWS::S3::Bucket")
    assert {b["DeletionPolicy"] for b in buckets.values()} == {"Delete"}
    assert template.find_resources("Custom::S3AutoDeleteObjects"), "dev buckets must be emptied on delete"
    template.has_resource("AWS::KMS::Key", {"DeletionPolicy": "Delete"})


def test_prod_retains_buckets_and_key(prod: Synthesized) -> None:
    template = prod.template("model_store")
    buckets = template.find_resources("AWS::S3::Bucket")
    assert {b["DeletionPolicy"] for b in buckets.values()} == {"Retain"}
    assert {b["UpdateReplacePolicy"] for b in buckets.values()} == {"Retain"}
    assert template.find_resources("Custom::S3AutoDeleteObjects") == {}
    template.has_resource("AWS::KMS::Key", {"DeletionPolicy": "Retain"})
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.object_like({"Fn::Join": ["", Match.array_with(["edgeml-prod-models-"])]}),
            "LifecycleConfiguration": {
                "Rules": [Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 90}})]
            },
        },
    )
