"""The lineage registry: one DynamoDB table recording what was trained, published and deployed where.

The key layout is ``lambdas/lifecycle/registry.py``'s ``LINEAGE_TABLE_SCHEMA``, imported here so the
table and the code that reads it cannot drift apart.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA


class LineageRegistry(Construct):
    """Attributes: ``table``, ``key``."""

    def __init__(
        self, scope: Construct, id_: str, *, name_prefix: str, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, id_)
        self.key = kms.Key(
            self,
            "Key",
            description=f"{name_prefix} lineage registry",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        schema = LINEAGE_TABLE_SCHEMA
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name=schema.partition_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=schema.sort_key, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            # The registry is the audit trail of every rollout: recoverable to any second of the last 35 days.
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=removal_policy,
        )
