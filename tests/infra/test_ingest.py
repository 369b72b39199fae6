"""Anomaly ingest: events table, archive bucket, alert topic, the Lambda, the IoT rules, exact IAM."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from infra.parts.ingest import archive_transitions, mismatch_sql, rule_sql
from lambdas.ingest.table import EVENTS_TABLE_SCHEMA
from tests.infra.conftest import IOT, Synthesized, as_list, assert_no_wildcard_actions, flatten

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> Template:
    return dev.template("ingest")


@pytest.fixture(scope="module")
def prod_template(prod: Synthesized) -> Template:
    return prod.template("ingest")


def _only(template: Template, resource_type: str, props: dict[str, Any] | None = None) -> tuple[str, Any]:
    found = template.find_resources(resource_type, {"Properties": props} if props else None)
    assert len(found) == 1, found
    logical_id, resource = next(iter(found.items()))
    return logical_id, resource


def _ref(logical_id: str) -> str:
    return "{" + logical_id + "}"


def _arn(logical_id: str) -> str:
    return "{" + logical_id + ".Arn}"


@pytest.fixture(scope="module")
def ids(template: Template) -> dict[str, str]:
    """Logical ids of the resources the assertions refer to, found by their properties."""
    table, _ = _only(template, "AWS::DynamoDB::Table")
    archive, _ = _only(template, "AWS::S3::Bucket", {"VersioningConfiguration": {"Status": "Enabled"}})
    topic, _ = _only(template, "AWS::SNS::Topic")
    key, _ = _only(template, "AWS::KMS::Key")
    function, _ = _only(template, "AWS::Lambda::Function", {"PackageType": "Image"})
    queues = template.find_resources("AWS::SQS::Queue")
    return {
        "table": table,
        "archive": archive,
        "topic": topic,
        "key": key,
        "function": function,
        "failure_queue": next(q for q in queues if q.startswith("IngestFailureQueue")),
        "error_queue": next(q for q in queues if q.startswith("IngestRuleErrorQueue")),
        "rule_role": next(
            r for r in template.find_resources("AWS::IAM::Role") if r.startswith("IngestRuleRole")
        ),
    }


def _without_export_hash(text: str) -> str:
    """CDK ends an export's name with a hash of its path; the logical id before it is what matters."""
    return re.sub(r"[0-9A-F]{8}\}$", "}", text) if text.startswith("{import:") else text


@pytest.fixture(scope="module")
def lineage(dev: Synthesized) -> dict[str, str]:
    """The lineage table and key of the model store stack, as the ingest stack imports them."""
    store = dev.template("model_store")
    table, _ = _only(store, "AWS::DynamoDB::Table")
    key = next(k for k in store.find_resources("AWS::KMS::Key") if k.startswith("Lineage"))
    exports = "{import:EdgemlDevModelStore:ExportsOutput"
    return {
        "table_ref": f"{exports}Ref{table}" + "}",
        "table_arn": f"{exports}FnGetAtt{table}Arn" + "}",
        "key_arn": f"{exports}FnGetAtt{key}Arn" + "}",
    }


# --- events table -------------------------------------------------------------------------------------


def test_events_table_matches_the_code_schema(template: Template) -> None:
    """The CDK table and ``create_table_kwargs`` (what the tests and stand-ins use) describe one table."""
    expected = EVENTS_TABLE_SCHEMA.create_table_kwargs("ignored")
    _, table = _only(template, "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["KeySchema"] == expected["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert props["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_events_table_ttl_pitr_and_customer_managed_key(template: Template) -> None:
    key = Capture()
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {
                "SSEEnabled": True,
                "SSEType": "KMS",
                "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
            },
        },
    )
    assert (
        template.find_resources("AWS::KMS::Key")[key.as_string()]["Properties"]["EnableKeyRotation"] is True
    )


def test_dev_table_is_deleted_with_the_stack_prod_table_is_kept(
    template: Template, prod_template: Template
) -> None:
    assert _only(template, "AWS::DynamoDB::Table")[1]["DeletionPolicy"] == "Delete"
    assert _only(prod_template, "AWS::DynamoDB::Table")[1]["DeletionPolicy"] == "Retain"


# --- archive bucket -----------------------------------------------------------------------------------


def test_archive_bucket_encrypted_versioned_logged_and_private(
    template: Template, ids: dict[str, str]
) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [ids["key"], "Arn"]},
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": Match.string_like_regexp("^IngestArchiveAccessLogs")},
                "LogFilePrefix": "anomaly-archive/",
            },
        },
    )


def test_archive_bucket_denies_plain_http(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": ids["archive"]},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def _archive_rule(template: Template) -> dict[str, Any]:
    _, bucket = _only(template, "AWS::S3::Bucket", {"VersioningConfiguration": {"Status": "Enabled"}})
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert len(rules) == 1
    rule: dict[str, Any] = rules[0]
    return rule


def test_dev_archive_expires_after_30_days_without_transitions(template: Template) -> None:
    rule = _archive_rule(template)
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == 30
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert "Transitions" not in rule


def test_prod_archive_moves_to_infrequent_access_then_glacier_and_expires(prod_template: Template) -> None:
    rule = _archive_rule(prod_template)
    assert rule["ExpirationInDays"] == 730
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert rule["Transitions"] == [
        {"StorageClass": "STANDARD_IA", "TransitionInDays": 30},
        {"StorageClass": "GLACIER", "TransitionInDays": 90},
    ]


def test_archive_transitions_only_before_expiry() -> None:
    assert archive_transitions(30) == []
    assert [t.storage_class.value for t in archive_transitions(60)] == ["STANDARD_IA"]
    assert [t.storage_class.value for t in archive_transitions(91)] == ["STANDARD_IA", "GLACIER"]


# --- alert topic and queues ---------------------------------------------------------------------------


def test_alert_topic_encrypted_and_tls_only(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [ids["key"], "Arn"]}}
    )
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": ids["topic"]}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )


def test_both_failure_queues_encrypted_tls_only_and_keep_two_weeks(
    template: Template, ids: dict[str, str]
) -> None:
    queues = template.find_resources("AWS::SQS::Queue")
    assert set(queues) == {ids["failure_queue"], ids["error_queue"]}
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 86_400
        template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": logical_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                            )
                        ]
                    )
                },
            },
        )


# --- the function -------------------------------------------------------------------------------------


def test_function_is_a_bounded_traced_image(template: Template) -> None:
    _, function = _only(template, "AWS::Lambda::Function", {"PackageType": "Image"})
    props = function["Properties"]
    assert props["ReservedConcurrentExecutions"] == 5
    assert props["Timeout"] == 30
    assert props["MemorySize"] == 256
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Architectures"] == ["x86_64"]


def test_function_environment_points_at_its_resources(
    template: Template, ids: dict[str, str], lineage: dict[str, str]
) -> None:
    _, function = _only(template, "AWS::Lambda::Function", {"PackageType": "Image"})
    variables = function["Properties"]["Environment"]["Variables"]
    assert {name: _without_export_hash(flatten(value)) for name, value in variables.items()} == {
        "EVENTS_TABLE": _ref(ids["table"]),
        "ARCHIVE_BUCKET": _ref(ids["archive"]),
        "ALERT_TOPIC_ARN": _ref(ids["topic"]),
        "ALERTS_PER_WINDOW": "5",
        "ALERT_WINDOW_S": "3600",
        "HEARTBEAT_TTL_DAYS": "7",
        # The model store stack's lineage table, where drift finds each model's training metrics.
        "LINEAGE_TABLE": lineage["table_ref"],
        "METRICS_NAMESPACE": "EdgeML/edgeml-dev",
    }


def test_failed_invocations_retry_twice_then_go_to_the_failure_queue(
    template: Template, ids: dict[str, str]
) -> None:
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": ids["function"]},
            "MaximumRetryAttempts": 2,
            "MaximumEventAgeInSeconds": 6 * 3600,
            "DestinationConfig": {
                "OnFailure": {"Destination": {"Fn::GetAtt": [ids["failure_queue"], "Arn"]}}
            },
        },
    )


def test_log_group_retention_follows_the_environment(template: Template, prod_template: Template) -> None:
    template.has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 14}, "DeletionPolicy": "Delete"}
    )
    prod_template.has_resource(
        "AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 365}, "DeletionPolicy": "Retain"}
    )


def test_prod_runs_wider_and_keeps_heartbeats_longer(prod_template: Template) -> None:
    _, function = _only(prod_template, "AWS::Lambda::Function", {"PackageType": "Image"})
    props = function["Properties"]
    assert props["ReservedConcurrentExecutions"] == 50
    assert props["Environment"]["Variables"]["HEARTBEAT_TTL_DAYS"] == "30"
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::DynamoDB::Table"):
        assert {r["DeletionPolicy"] for r in prod_template.find_resources(resource_type).values()} == {
            "Retain"
        }
    assert prod_template.find_resources("Custom::S3AutoDeleteObjects") == {}


def test_dockerfile_builds_the_ingest_image() -> None:
    dockerfile = (ROOT / "lambdas" / "ingest" / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM public.ecr.aws/lambda/python:3.12" in dockerfile
    for pin in ("boto3==1.44.5", "aws-lambda-powertools==3.37.0"):
        assert pin in dockerfile
    assert "COPY ingest/ ${LAMBDA_TASK_ROOT}/lambdas/ingest/" in dockerfile
    assert "COPY __init__.py ${LAMBDA_TASK_ROOT}/lambdas/__init__.py" in dockerfile
    assert 'CMD ["lambdas.ingest.handler.handler"]' in dockerfile


def test_staged_image_asset_contains_the_ingest_package(dev: Synthesized, template: Template) -> None:
    _, function = _only(template, "AWS::Lambda::Function", {"PackageType": "Image"})
    image_tag = function["Properties"]["Code"]["ImageUri"]["Fn::Sub"].rsplit(":", 1)[1]
    staged = dev.outdir / f"asset.{image_tag}"
    assert (staged / "ingest" / "Dockerfile").is_file()
    assert (staged / "ingest" / "handler.py").is_file()
    assert (staged / "__init__.py").is_file()
    assert not list(staged.rglob("__pycache__"))


# --- IoT rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_name", "sql"),
    [
        (
            "edgeml_dev_anomalies",
            "SELECT *, topic(2) AS thing_from_topic FROM 'edge/+/anomalies' "
            "WHERE topic(2) = get_or_default(thing_name, '')",
        ),
        (
            "edgeml_dev_health",
            "SELECT *, topic(2) AS thing_from_topic FROM 'edge/+/health' "
            "WHERE topic(2) = get_or_default(thing_name, '')",
        ),
    ],
)
def test_device_rules_invoke_the_function_and_keep_failures(
    template: Template, ids: dict[str, str], rule_name: str, sql: str
) -> None:
    template.has_resource_properties(
        "AWS::IoT::TopicRule",
        {
            "RuleName": rule_name,
            "TopicRulePayload": {
                "Sql": sql,
                "AwsIotSqlVersion": "2016-03-23",
                "RuleDisabled": False,
                "Actions": [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [ids["function"], "Arn"]}}}],
                "ErrorAction": {
                    "Sqs": {
                        "QueueUrl": {"Ref": ids["error_queue"]},
                        "RoleArn": {"Fn::GetAtt": [ids["rule_role"], "Arn"]},
                        "UseBase64": False,
                    }
                },
            },
        },
    )


def test_rule_sql_takes_only_bodies_naming_the_topics_thing() -> None:
    # The topic is the identity the device policy vouches for; the body's thing_name is checked against it
    # by the rule itself, so no body key (not even its own thing_from_topic) can claim another device.
    # A body without thing_name compares as '' (get_or_default), never Undefined, which would match
    # neither rule: the two WHERE clauses are exact complements.
    select = "SELECT *, topic(2) AS thing_from_topic FROM 'edge/+/x' "
    assert rule_sql("edge/+/x") == select + "WHERE topic(2) = get_or_default(thing_name, '')"
    assert mismatch_sql("edge/+/x") == select + "WHERE topic(2) <> get_or_default(thing_name, '')"


@pytest.mark.parametrize("topic_filter", ["edge/+/anomalies", "edge/+/health"])
def test_bodies_naming_another_thing_go_to_the_alarmed_rule_error_queue(
    template: Template, topic_filter: str
) -> None:
    """Not dropped, and not given to the function either: counted in the queue its alarm watches."""
    rules = template.find_resources("AWS::IoT::TopicRule")
    (rule,) = [
        r["Properties"]["TopicRulePayload"]
        for r in rules.values()
        if r["Properties"]["TopicRulePayload"]["Sql"] == mismatch_sql(topic_filter)
    ]
    (action,) = rule["Actions"]
    assert set(action) == {"Sqs"}
    assert action == rule["ErrorAction"]


def test_anomaly_rate_rule_publishes_the_drift_metric(template: Template, ids: dict[str, str]) -> None:
    template.has_resource_properties(
        "AWS::IoT::TopicRule",
        {
            "RuleName": "edgeml_dev_anomaly_rate",
            "TopicRulePayload": {
                "Sql": (
                    "SELECT anomaly_rate "
                    "FROM 'edge/+/health' WHERE topic(2) = thing_name AND period_windows > 0"
                ),
                "AwsIotSqlVersion": "2016-03-23",
                "Actions": [
                    {
                        "CloudwatchMetric": {
                            "MetricNamespace": "EdgeML/edgeml-dev",
                            "MetricName": "HeartbeatAnomalyRate",
                            "MetricValue": "${anomaly_rate}",
                            "MetricUnit": "None",
                            "RoleArn": {"Fn::GetAtt": [ids["rule_role"], "Arn"]},
                        }
                    }
                ],
                "ErrorAction": {"Sqs": Match.object_like({"QueueUrl": {"Ref": ids["error_queue"]}})},
            },
        },
    )


def test_iot_may_invoke_the_function_only_from_the_two_rules(template: Template, ids: dict[str, str]) -> None:
    permissions = template.find_resources("AWS::Lambda::Permission")
    assert len(permissions) == 2
    rules = template.find_resources("AWS::IoT::TopicRule")
    by_name = {r["Properties"]["RuleName"]: logical_id for logical_id, r in rules.items()}
    sources = set()
    for permission in permissions.values():
        props = permission["Properties"]
        assert props["Principal"] == "iot.amazonaws.com"
        assert props["Action"] == "lambda:InvokeFunction"
        assert props["FunctionName"] == {"Fn::GetAtt": [ids["function"], "Arn"]}
        assert props["SourceAccount"] == {"Ref": "AWS::AccountId"}
        sources.add(props["SourceArn"]["Fn::GetAtt"][0])
    assert sources == {by_name["edgeml_dev_anomalies"], by_name["edgeml_dev_health"]}


# --- IAM ----------------------------------------------------------------------------------------------


def _statements(template: Template, policy_prefix: str) -> dict[str, dict[str, Any]]:
    policies = {
        k: v for k, v in template.find_resources("AWS::IAM::Policy").items() if k.startswith(policy_prefix)
    }
    assert len(policies) == 1, list(policies)
    document = next(iter(policies.values()))["Properties"]["PolicyDocument"]
    return {s["Sid"]: s for s in document["Statement"]}


def test_ingest_role_statements_are_exact(
    template: Template, ids: dict[str, str], lineage: dict[str, str]
) -> None:
    statements = _statements(template, "IngestPolicy")
    got = {
        sid: (
            as_list(s["Action"]),
            [_without_export_hash(flatten(r)) for r in as_list(s["Resource"])],
            s["Effect"],
        )
        for sid, s in statements.items()
    }
    assert got == {
        # The table itself: no index ARN, the function never queries.
        "EventsTable": (
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            [_arn(ids["table"])],
            "Allow",
        ),
        "ArchiveRawEvents": (["s3:PutObject"], [_arn(ids["archive"]) + "/anomalies/*"], "Allow"),
        "PublishAlerts": (["sns:Publish"], [_ref(ids["topic"])], "Allow"),
        "IngestKey": (
            ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"],
            [_arn(ids["key"])],
            "Allow",
        ),
        # Drift: the model items' training metrics, read by key only, and the lineage table's key.
        "ReadTrainingMetrics": (["dynamodb:GetItem"], [lineage["table_arn"]], "Allow"),
        "LineageKey": (["kms:Decrypt"], [lineage["key_arn"]], "Allow"),
        # Delivery acks (contracts §4): every thing's acks topic, and no other topic.
        "PublishAcks": (["iot:Publish"], [f"{IOT}topic/edge/*/acks"], "Allow"),
        "FindDataEndpoint": (["iot:DescribeEndpoint"], ["*"], "Allow"),
    }
    assert all("Condition" not in s for s in statements.values())


def test_ingest_may_publish_only_acks_and_look_up_only_the_endpoint(template: Template) -> None:
    """No IoT permission beyond the two the ack publisher uses, in any of the stack's policies."""
    iot_grants = [
        (action, flatten(resource))
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in as_list(statement["Action"])
        if action.startswith("iot:")
        for resource in as_list(statement["Resource"])
    ]
    assert sorted(iot_grants) == [
        ("iot:DescribeEndpoint", "*"),
        ("iot:Publish", f"{IOT}topic/edge/*/acks"),
    ]


def test_ingest_role_defaults_are_logs_tracing_and_the_failure_queue(
    template: Template, ids: dict[str, str]
) -> None:
    policies = {
        k: v
        for k, v in template.find_resources("AWS::IAM::Policy").items()
        if k.startswith("IngestRoleDefaultPolicy")
    }
    assert len(policies) == 1
    statements = next(iter(policies.values()))["Properties"]["PolicyDocument"]["Statement"]
    by_resource = {flatten(s["Resource"]): as_list(s["Action"]) for s in statements}
    (log_group,) = template.find_resources("AWS::Logs::LogGroup")
    assert by_resource == {
        _arn(log_group): ["logs:CreateLogStream", "logs:PutLogEvents"],
        "*": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        _arn(ids["failure_queue"]): ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
    }


def test_ingest_role_is_lambdas_and_has_no_managed_policies(template: Template) -> None:
    roles = template.find_resources("AWS::IAM::Role")
    role = next(
        v for k, v in roles.items() if k.startswith("IngestRole") and not k.startswith("IngestRuleRole")
    )
    assert "ManagedPolicyArns" not in role["Properties"]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
    ]


def test_rule_role_sends_errors_and_puts_only_its_namespace(template: Template, ids: dict[str, str]) -> None:
    role = template.find_resources("AWS::IAM::Role")[ids["rule_role"]]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "iot.amazonaws.com"},
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
        }
    ]
    statements = _statements(template, "IngestRulePolicy")
    assert set(statements) == {"RuleErrors", "HeartbeatMetric"}
    assert statements["RuleErrors"]["Action"] == "sqs:SendMessage"
    assert statements["RuleErrors"]["Resource"] == {"Fn::GetAtt": [ids["error_queue"], "Arn"]}
    metric = statements["HeartbeatMetric"]
    assert metric["Action"] == "cloudwatch:PutMetricData"
    assert metric["Resource"] == "*"
    assert metric["Condition"] == {"StringEquals": {"cloudwatch:namespace": "EdgeML/edgeml-dev"}}


def test_no_wildcard_actions_anywhere(template: Template) -> None:
    assert_no_wildcard_actions(template)
