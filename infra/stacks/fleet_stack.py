"""Deployable component: the device fleet in IoT Core (thing groups, token exchange).

Core-device IoT policies are per device and made by ``edgeml device policy`` (infra/device_policy.py);
``RoleAliasName`` is the role alias they grant.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import PlatformConfig
from infra.parts.fleet import Fleet
from infra.parts.model_store import ModelStore


class FleetStack(Stack):
    def __init__(
        self, scope: Construct, id_: str, *, config: PlatformConfig, model_store: ModelStore, **kwargs: Any
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        self.fleet = Fleet(
            self,
            "Fleet",
            name_prefix=config.name_prefix,
            canary_thing_group_name=config.canary_thing_group_name,
            fleet_thing_group_name=config.fleet_thing_group_name,
            model_store=model_store,
        )
        CfnOutput(self, "FleetThingGroupArn", value=self.fleet.fleet_group.attr_arn)
        CfnOutput(self, "CanaryThingGroupArn", value=self.fleet.canary_group.attr_arn)
        CfnOutput(self, "RoleAliasName", value=self.fleet.role_alias.role_alias or "")
