"""Anomaly ingest: IoT rules → the ingest Lambda → events table, raw-event archive, rate-limited alerts.

Delivery path and where each failure goes (nothing is dropped silently):

- IoT Core evaluates the rules on ``edge/+/anomalies`` and ``edge/+/health`` and invokes the function
  *asynchronously*. An invoke IoT cannot make (throttled, function missing, permission) goes to the rules'
  error action: an encrypted SQS queue.
- An invocation that fails is retried by Lambda (``RETRY_ATTEMPTS``) and then sent to the function's
  on-failure destination, a second encrypted SQS queue. The code is idempotent on the event id
  (``lambdas/ingest/core.py``), so retries cannot store, archive or alert twice.
- A third rule on ``edge/+/health`` turns each heartbeat's anomalous-window fraction into a CloudWatch
  metric, the input of the drift alarm (``infra/parts/drift.py``).
- Each anomaly event whose ingest finished (a duplicate too) is acknowledged to its device on
  ``edge/<thing>/acks`` through the IoT data plane (docs/contracts.md §4). An ack that cannot be published
  is logged and counted (``AckPublishFailures``), never a failed invocation: the device resends the event.
- The function measures each heartbeat against its model's training (``lambdas/ingest/drift.py``), reading
  the training metrics from the lineage registry, and writes the statistics as Embedded Metric Format log
  lines into the same namespace: the inputs of the score- and input-drift alarms.

Identity: the device policy lets a certificate publish only under ``edge/<its thing>/``, so ``topic(2)``
is trusted, and the body's ``thing_name`` is not. The ingest rules take only messages whose
``thing_name`` is the topic's thing (``WHERE``), and project the topic's thing as ``thing_from_topic``
for the function to check again. Every other message goes to a mismatch rule, whose action is the
rule-error queue (alarmed on, ``infra/parts/ingest_alarms.py``), so it is counted and kept, not dropped.
It never reaches the function: whether IoT SQL lets a body's own ``thing_from_topic`` key win over the
projection is not documented, and a spoofed identity must not depend on it. (The anomaly-rate metric rule
filters the same way.)

The table layout comes from ``lambdas/ingest/table.py`` and the environment variable names from
``lambdas/ingest/config.py``: imported, not copied, so infrastructure and code cannot disagree.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.parts.common import (
    AsyncInvoke,
    access_logs_bucket,
    container_function,
    encrypted_queue,
    encrypted_table,
    function_identity,
    rotating_key,
)
from infra.parts.fleet import iot_arn
from infra.parts.lineage import LineageRegistry
from lambdas.ingest.config import (
    ENV_ALERT_TOPIC_ARN,
    ENV_ALERT_WINDOW_S,
    ENV_ALERTS_PER_WINDOW,
    ENV_ARCHIVE_BUCKET,
    ENV_EVENTS_TABLE,
    ENV_HEARTBEAT_TTL_DAYS,
    ENV_LINEAGE_TABLE,
    ENV_METRICS_NAMESPACE,
)
from lambdas.ingest.events import TOPIC_THING_FIELD
from lambdas.ingest.table import EVENTS_TABLE_SCHEMA

# docs/contracts.md §4; topic(2) is the thing name.
ANOMALY_TOPIC_FILTER = "edge/+/anomalies"
HEALTH_TOPIC_FILTER = "edge/+/health"
# The delivery acks the function publishes (lambdas/ingest/acks.py), one topic per thing: as an IAM
# resource, every thing's acks topic and nothing else under edge/.
ACK_TOPIC_RESOURCE = "topic/edge/*/acks"
# lambdas/ingest/core.py: archive keys are anomalies/<yyyy>/<mm>/<dd>/<thing>/<event_id>.json.
ARCHIVE_PREFIX = "anomalies/"
IOT_SQL_VERSION = "2016-03-23"
# The heartbeat fields (docs/contracts.md §6b) the drift metric is built from: the device's own rate over
# the last period, only for periods that scored a window.
ANOMALY_RATE_FIELD = "anomaly_rate"
PERIOD_WINDOWS_FIELD = "period_windows"
ANOMALY_RATE_METRIC = "HeartbeatAnomalyRate"

# A few DynamoDB, S3 and SNS calls per event; 30 s leaves room for SDK retries on throttling.
INGEST_TIMEOUT = Duration.seconds(30)
INGEST_MEMORY_MB = 256
# Lambda's asynchronous retries after a failed invocation, then the on-failure destination.
RETRY_ATTEMPTS = 2
MAX_EVENT_AGE = Duration.hours(6)
# Glacier Flexible Retrieval suits an archive read only for investigations and retraining datasets;
# S3 refuses Standard-IA transitions earlier than 30 days.
ARCHIVE_INFREQUENT_ACCESS_AFTER_DAYS = 30
ARCHIVE_GLACIER_AFTER_DAYS = 90


# A body without `thing_name` must compare as "not this thing", never as Undefined: a WHERE that is
# Undefined matches no rule, and such a message would vanish. `=` and `<>` on mismatched types give False and
# True (AWS IoT SQL operators), so the two rules below are exact complements.
_BODY_THING = "get_or_default(thing_name, '')"


def rule_sql(topic_filter: str) -> str:
    """The device rules' SQL: the device's object plus the topic's thing, for messages whose body names
    the thing of the topic they came on (the only identity the device policy vouches for)."""
    # IoT SQL from module constants, not from input: S608 (SQL injection) does not apply.
    return (
        f"SELECT *, topic(2) AS {TOPIC_THING_FIELD} FROM '{topic_filter}' "  # noqa: S608
        f"WHERE topic(2) = {_BODY_THING}"
    )


def mismatch_sql(topic_filter: str) -> str:
    """Every other message of the topic (another thing named, or none): to the rule-error queue, counted
    and alarmed on, never to the function (module docstring)."""
    return (
        f"SELECT *, topic(2) AS {TOPIC_THING_FIELD} FROM '{topic_filter}' "  # noqa: S608
        f"WHERE topic(2) <> {_BODY_THING}"
    )


def anomaly_rate_sql() -> str:
    # The period's rate, not the cumulative one: a rise must show within minutes even after months of
    # uptime. An idle period (no window scored) carries no rate and must not pull the fleet average to 0;
    # a heartbeat without the field (a component before it existed) is Undefined and matches nothing.
    return (
        f"SELECT {ANOMALY_RATE_FIELD} FROM '{HEALTH_TOPIC_FILTER}' "  # noqa: S608
        f"WHERE topic(2) = thing_name AND {PERIOD_WINDOWS_FIELD} > 0"
    )


def drift_metric_namespace(name_prefix: str) -> str:
    # The IoT CloudWatch metric action sets no dimensions, so the environment is in the namespace.
    return f"EdgeML/{name_prefix}"


def archive_transitions(expiration_days: int) -> list[s3.Transition]:
    """Storage-class steps that happen before the objects expire (S3 refuses the others)."""
    steps = (
        (ARCHIVE_INFREQUENT_ACCESS_AFTER_DAYS, s3.StorageClass.INFREQUENT_ACCESS),
        (ARCHIVE_GLACIER_AFTER_DAYS, s3.StorageClass.GLACIER),
    )
    return [
        s3.Transition(storage_class=storage_class, transition_after=Duration.days(days))
        for days, storage_class in steps
        if days < expiration_days
    ]


def _rule_name(name_prefix: str, suffix: str) -> str:
    # IoT rule names allow only letters, digits and underscores.
    return f"{name_prefix.replace('-', '_')}_{suffix}"


class AnomalyIngest(Construct):
    """Attributes: ``key``, ``table``, ``archive_bucket``, ``access_logs_bucket``, ``alert_topic``,
    ``function``, ``role``, ``log_group``, ``failure_queue``, ``rule_error_queue``, ``rule_role``,
    ``anomaly_rule``, ``health_rule``, ``mismatch_rules``, ``anomaly_rate_rule``, ``metric_namespace``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        name_prefix: str,
        code_directory: str,
        reserved_concurrency: int,
        alerts_per_window: int,
        alert_window_seconds: int,
        heartbeat_ttl_days: int,
        archive_expiration_days: int,
        noncurrent_version_expiration: Duration,
        alert_email: str | None,
        lineage: LineageRegistry,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        auto_delete_objects: bool,
    ) -> None:
        super().__init__(scope, id_)
        self._lineage = lineage
        self.metric_namespace = drift_metric_namespace(name_prefix)
        # One key for the ingest data at rest: events table, archive and alert topic.
        self.key = rotating_key(
            self,
            "Key",
            description=f"{name_prefix} anomaly ingest: events table, raw-event archive, alert topic",
            removal_policy=removal_policy,
        )
        self.table = self._events_table(removal_policy)
        self.access_logs_bucket, self.archive_bucket = self._archive(
            archive_expiration_days, noncurrent_version_expiration, removal_policy, auto_delete_objects
        )
        self.alert_topic = sns.Topic(
            self,
            "AlertTopic",
            display_name=f"{name_prefix} anomaly alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        if alert_email is not None:
            self.alert_topic.add_subscription(subscriptions.EmailSubscription(alert_email))

        self.failure_queue = self._queue(
            "FailureQueue", "It is the dead-letter sink itself: the ingest function's on-failure destination."
        )
        self.rule_error_queue = self._queue(
            "RuleErrorQueue", "It is the dead-letter sink itself: the IoT rules' error action delivers here."
        )
        identity = function_identity(
            self,
            description=f"{name_prefix}: anomaly ingest (store events, archive, alert)",
            log_retention=log_retention,
            removal_policy=removal_policy,
        )
        self.log_group, self.role = identity.log_group, identity.role
        # The grants are exactly what the code calls.
        self._grant_ingest(self.role)

        self.function = container_function(
            self,
            identity=identity,
            code_directory=code_directory,
            dockerfile="ingest/Dockerfile",
            environment={
                ENV_EVENTS_TABLE: self.table.table_name,
                ENV_ARCHIVE_BUCKET: self.archive_bucket.bucket_name,
                ENV_ALERT_TOPIC_ARN: self.alert_topic.topic_arn,
                ENV_ALERTS_PER_WINDOW: str(alerts_per_window),
                ENV_ALERT_WINDOW_S: str(alert_window_seconds),
                ENV_HEARTBEAT_TTL_DAYS: str(heartbeat_ttl_days),
                ENV_LINEAGE_TABLE: lineage.table.table_name,
                # EMF lines need no PutMetricData permission: CloudWatch Logs extracts the metrics.
                ENV_METRICS_NAMESPACE: self.metric_namespace,
            },
            memory_size=INGEST_MEMORY_MB,
            timeout=INGEST_TIMEOUT,
            # Bounded: a fleet-wide burst queues in Lambda's async queue (up to MAX_EVENT_AGE) instead of
            # exhausting the account's concurrency or the table's write capacity.
            reserved_concurrency=reserved_concurrency,
            invoke=AsyncInvoke(
                retry_attempts=RETRY_ATTEMPTS,
                max_event_age=MAX_EVENT_AGE,
                # A destination record carries the request payload *and* the error, which a DLQ message
                # lacks.
                on_failure=destinations.SqsDestination(self.failure_queue),
            ),
        )

        # What IoT Core does on our behalf: error-action deliveries and the drift metric.
        self.rule_role = iam.Role(
            self,
            "RuleRole",
            # Confused-deputy guard: only IoT Core acting for this account may assume it.
            assumed_by=iam.ServicePrincipal(
                "iot.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description=f"{name_prefix}: IoT rule error action and heartbeat metric",
        )
        rule_policy = iam.Policy(
            self,
            "RulePolicy",
            statements=[
                iam.PolicyStatement(
                    sid="RuleErrors",
                    actions=["sqs:SendMessage"],
                    resources=[self.rule_error_queue.queue_arn],
                ),
                iam.PolicyStatement(
                    sid="HeartbeatMetric",
                    actions=["cloudwatch:PutMetricData"],
                    # PutMetricData has no resource type; the namespace condition is the boundary.
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": self.metric_namespace}},
                ),
            ],
        )
        rule_policy.attach_to_role(self.rule_role)
        nag.acknowledge(
            rule_policy,
            nag.wildcard_resource(self, "*"),
            "cloudwatch:PutMetricData takes no resource ARN; a condition pins the environment's namespace.",
        )

        error_action = iot.CfnTopicRule.ActionProperty(
            sqs=iot.CfnTopicRule.SqsActionProperty(
                queue_url=self.rule_error_queue.queue_url, role_arn=self.rule_role.role_arn, use_base64=False
            )
        )
        invoke = iot.CfnTopicRule.ActionProperty(
            lambda_=iot.CfnTopicRule.LambdaActionProperty(function_arn=self.function.function_arn)
        )
        self.anomaly_rule = self._rule(
            "AnomalyRule",
            rule_name=_rule_name(name_prefix, "anomalies"),
            description="Device anomaly events to the ingest function",
            sql=rule_sql(ANOMALY_TOPIC_FILTER),
            action=invoke,
            error_action=error_action,
        )
        self.health_rule = self._rule(
            "HealthRule",
            rule_name=_rule_name(name_prefix, "health"),
            description="Device heartbeats to the ingest function",
            sql=rule_sql(HEALTH_TOPIC_FILTER),
            action=invoke,
            error_action=error_action,
        )
        # Bodies that name another thing, or none: kept and alarmed on, never ingested (module docstring).
        self.mismatch_rules = [
            self._rule(
                f"{kind.capitalize()}MismatchRule",
                rule_name=_rule_name(name_prefix, f"{kind}_mismatch"),
                description=f"Device {kind} naming another thing, or none: to the rule-error queue",
                sql=mismatch_sql(topic_filter),
                action=error_action,
                error_action=error_action,
            )
            for kind, topic_filter in (("anomalies", ANOMALY_TOPIC_FILTER), ("health", HEALTH_TOPIC_FILTER))
        ]
        self.anomaly_rate_rule = self._rule(
            "AnomalyRateRule",
            rule_name=_rule_name(name_prefix, "anomaly_rate"),
            description="Each heartbeat's anomalous-window fraction as a metric (drift alarm input)",
            sql=anomaly_rate_sql(),
            action=iot.CfnTopicRule.ActionProperty(
                cloudwatch_metric=iot.CfnTopicRule.CloudwatchMetricActionProperty(
                    metric_namespace=self.metric_namespace,
                    metric_name=ANOMALY_RATE_METRIC,
                    metric_value="${anomaly_rate}",
                    metric_unit="None",
                    role_arn=self.rule_role.role_arn,
                )
            ),
            error_action=error_action,
        )
        for rule_id, rule in (("Anomaly", self.anomaly_rule), ("Health", self.health_rule)):
            self.function.add_permission(
                f"InvokeFrom{rule_id}Rule",
                principal=iam.ServicePrincipal("iot.amazonaws.com"),
                source_arn=rule.attr_arn,
                source_account=Aws.ACCOUNT_ID,
            )

    def _events_table(self, removal_policy: RemovalPolicy) -> dynamodb.Table:
        schema = EVENTS_TABLE_SCHEMA
        table = encrypted_table(
            self,
            "EventsTable",
            schema=schema,
            key=self.key,
            removal_policy=removal_policy,
            # Heartbeats and alert counters carry an expiry; anomaly events do not and are kept.
            time_to_live_attribute=schema.ttl_attribute,
        )
        table.add_global_secondary_index(
            index_name=schema.stream_index_name,
            partition_key=dynamodb.Attribute(
                name=schema.stream_index_partition_key, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(
                name=schema.stream_index_sort_key, type=dynamodb.AttributeType.STRING
            ),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        return table

    def _archive(
        self,
        expiration_days: int,
        noncurrent_version_expiration: Duration,
        removal_policy: RemovalPolicy,
        auto_delete_objects: bool,
    ) -> tuple[s3.Bucket, s3.Bucket]:
        access_logs = access_logs_bucket(
            self, "ArchiveAccessLogs", removal_policy=removal_policy, auto_delete_objects=auto_delete_objects
        )
        archive = s3.Bucket(
            self,
            "ArchiveBucket",
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="anomaly-archive/",
            removal_policy=removal_policy,
            auto_delete_objects=auto_delete_objects,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="age-out-raw-events",
                    transitions=archive_transitions(expiration_days),
                    expiration=Duration.days(expiration_days),
                    # Versioned: expiry leaves the data as a noncurrent version until this removes it.
                    noncurrent_version_expiration=noncurrent_version_expiration,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )
        return access_logs, archive

    def _queue(self, id_: str, why_no_dead_letter_queue: str) -> sqs.Queue:
        queue = encrypted_queue(self, id_)
        # cdk-nag only recognises SQS redrive targets as dead-letter queues, not Lambda or IoT sinks.
        nag.acknowledge(queue, "AwsSolutions-SQS3", why_no_dead_letter_queue)
        return queue

    def _grant_ingest(self, role: iam.Role) -> None:
        """Exactly the calls of ``lambdas/ingest/adapters.py``; no index access (no handler query)."""
        archive_objects = self.archive_bucket.arn_for_objects(f"{ARCHIVE_PREFIX}*")
        ack_topics = iot_arn(ACK_TOPIC_RESOURCE)
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                # TransactWriteItems is authorized as one PutItem per Put in the transaction.
                iam.PolicyStatement(
                    sid="EventsTable",
                    actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                    resources=[self.table.table_arn],
                ),
                # Conditional (If-None-Match) writes need nothing beyond PutObject.
                iam.PolicyStatement(
                    sid="ArchiveRawEvents", actions=["s3:PutObject"], resources=[archive_objects]
                ),
                iam.PolicyStatement(
                    sid="PublishAlerts", actions=["sns:Publish"], resources=[self.alert_topic.topic_arn]
                ),
                # The table, the archive and the topic are encrypted with this key (DynamoDB's own grant
                # set, without the wildcard ReEncrypt*/GenerateDataKey* forms).
                iam.PolicyStatement(
                    sid="IngestKey",
                    actions=["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"],
                    resources=[self.key.key_arn],
                ),
                # Drift: one model item's training metrics per model version (cached while warm).
                iam.PolicyStatement(
                    sid="ReadTrainingMetrics",
                    actions=["dynamodb:GetItem"],
                    resources=[self._lineage.table.table_arn],
                ),
                iam.PolicyStatement(
                    sid="LineageKey", actions=["kms:Decrypt"], resources=[self._lineage.key.key_arn]
                ),
                # Delivery acks: an HTTPS publish through the data plane needs no iot:Connect.
                iam.PolicyStatement(sid="PublishAcks", actions=["iot:Publish"], resources=[ack_topics]),
                # The account's iot:Data-ATS endpoint, looked up once per cold start.
                iam.PolicyStatement(
                    sid="FindDataEndpoint", actions=["iot:DescribeEndpoint"], resources=["*"]
                ),
            ],
        )
        policy.attach_to_role(role)
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, archive_objects),
            "Archive keys are minted per event (anomalies/<date>/<thing>/<id>.json); the prefix bounds it.",
        )
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, ack_topics),
            "Any device's event may need its ack; the wildcard is the thing level of edge/<thing>/acks only.",
        )
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, "*"),
            "iot:DescribeEndpoint has no resource type; it only returns the account's data endpoint address.",
        )

    def _rule(
        self,
        id_: str,
        *,
        rule_name: str,
        description: str,
        sql: str,
        action: iot.CfnTopicRule.ActionProperty,
        error_action: iot.CfnTopicRule.ActionProperty,
    ) -> iot.CfnTopicRule:
        return iot.CfnTopicRule(
            self,
            id_,
            rule_name=rule_name,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=sql,
                aws_iot_sql_version=IOT_SQL_VERSION,
                description=description,
                rule_disabled=False,
                actions=[action],
                error_action=error_action,
            ),
        )
