"""The device fleet in IoT Core: thing groups, the token-exchange role and its alias.

No core-device IoT policy here: Greengrass does not support thing policy variables
(``${iot:Connection.Thing.*}``) in core devices' policies, so one policy cannot serve the whole fleet.
Each core device gets its own, naming its thing, created by ``edgeml device policy`` before the device
is installed (``infra/device_policy.py``, docs/deploy.md §3). This stack creates what those policies
point to: the role alias (named by ``infra.device_policy.role_alias_name``, so the two agree).
"""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from infra import nag
from infra.device_policy import role_alias_name
from infra.parts.model_store import COMPONENTS_PREFIX, ModelStore


def iot_arn(resource: str) -> str:
    return f"arn:{Aws.PARTITION}:iot:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


class Fleet(Construct):
    """Attributes: ``canary_group``, ``fleet_group``, ``token_exchange_role``, ``role_alias``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        name_prefix: str,
        canary_thing_group_name: str,
        fleet_thing_group_name: str,
        model_store: ModelStore,
    ) -> None:
        super().__init__(scope, id_)
        self.fleet_group = iot.CfnThingGroup(
            self,
            "FleetGroup",
            thing_group_name=fleet_thing_group_name,
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description=(
                    "Edge anomaly-detection gateways that run promoted models "
                    "(canaries are in the canary group only)"
                )
            ),
        )
        # Canary devices receive a new model first and are NOT in the fleet group: a device in both gets
        # two deployments pinning different model versions, which the nucleus cannot resolve. Promotion
        # deploys the canary's versions to the fleet group (docs/deploy.md §3).
        self.canary_group = iot.CfnThingGroup(
            self,
            "CanaryGroup",
            thing_group_name=canary_thing_group_name,
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description="Gateways that receive a new model before the fleet"
            ),
        )

        self.token_exchange_role = iam.Role(
            self,
            "TokenExchangeRole",
            assumed_by=iam.ServicePrincipal("credentials.iot.amazonaws.com"),
            description=f"{name_prefix}: Greengrass token exchange (released component artifacts only)",
        )
        # Only components/: models/ also holds candidates the gate rejected or nobody deployed, and the
        # publisher copies a model there only once it is released as a component version (contracts §2).
        artifacts = model_store.object_arn(f"{COMPONENTS_PREFIX}*")
        tes_policy = iam.Policy(
            self,
            "TokenExchangePolicy",
            statements=[
                iam.PolicyStatement(sid="DownloadArtifacts", actions=["s3:GetObject"], resources=[artifacts]),
                # The nucleus's S3 downloader asks for the bucket's region before every artifact download
                # and fails the deployment when refused (S3_GET_BUCKET_LOCATION_ACCESS_DENIED).
                iam.PolicyStatement(
                    sid="ArtifactBucketLocation",
                    actions=["s3:GetBucketLocation"],
                    resources=[model_store.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="DecryptArtifacts", actions=["kms:Decrypt"], resources=[model_store.key.key_arn]
                ),
            ],
        )
        tes_policy.attach_to_role(self.token_exchange_role)
        nag.acknowledge(
            tes_policy,
            nag.wildcard_resource(self, artifacts),
            "Devices download any released component artifact; components/ holds nothing else.",
        )

        self.role_alias = iot.CfnRoleAlias(
            self,
            "TokenExchangeRoleAlias",
            role_alias=role_alias_name(name_prefix),
            role_arn=self.token_exchange_role.role_arn,
            credential_duration_seconds=3600,
        )
