"""The lineage registry: one DynamoDB table recording what was trained, published and deployed where.

The key layout is ``lambdas/lifecycle/registry.py``'s ``LINEAGE_TABLE_SCHEMA``, imported here so the
table and the code that reads it cannot drift apart.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from constructs import Construct

from infra.parts.common import encrypted_table, rotating_key
from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA


class LineageRegistry(Construct):
    """Attributes: ``table``, ``key``."""

    def __init__(
        self, scope: Construct, id_: str, *, name_prefix: str, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, id_)
        self.key = rotating_key(
            self, "Key", description=f"{name_prefix} lineage registry", removal_policy=removal_policy
        )
        # Point-in-time recovery matters here: the registry is the audit trail of every rollout.
        self.table = encrypted_table(
            self, "Table", schema=LINEAGE_TABLE_SCHEMA, key=self.key, removal_policy=removal_policy
        )
