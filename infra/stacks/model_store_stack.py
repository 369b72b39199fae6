"""Deployable component: model state: the model store (bucket, key, access logs) and the lineage registry."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.lineage import LineageRegistry
from infra.parts.model_store import ModelStore
from infra.stacks.common import removal_policy


class ModelStoreStack(Stack):
    def __init__(self, scope: Construct, id_: str, *, config: PlatformConfig, **kwargs: Any) -> None:
        super().__init__(scope, id_, **kwargs)
        self.model_store = ModelStore(
            self,
            "ModelStore",
            name_prefix=config.name_prefix,
            removal_policy=removal_policy(config),
            auto_delete_objects=config.auto_delete_objects,
            noncurrent_version_expiration=Duration.days(config.noncurrent_version_expiration_days),
        )
        self.lineage = LineageRegistry(
            self, "Lineage", name_prefix=config.name_prefix, removal_policy=removal_policy(config)
        )
        CfnOutput(self, "ModelBucketName", value=self.model_store.bucket.bucket_name)
        CfnOutput(self, "ModelStoreKeyArn", value=self.model_store.key.key_arn)
        CfnOutput(self, "LineageTableName", value=self.lineage.table.table_name)
