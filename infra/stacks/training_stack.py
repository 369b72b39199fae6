"""Deployable component: what SageMaker training needs (its execution role)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.model_store import ModelStore
from infra.parts.training_role import TrainingRole


class TrainingStack(Stack):
    def __init__(
        self, scope: Construct, id_: str, *, config: PlatformConfig, model_store: ModelStore, **kwargs: Any
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        self.training = TrainingRole(
            self, "Training", model_store=model_store, name_prefix=config.name_prefix
        )
        CfnOutput(self, "TrainingRoleArn", value=self.training.role.role_arn)
