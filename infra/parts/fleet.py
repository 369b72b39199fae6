"""The device fleet in IoT Core: thing groups, the core-device policy, the token-exchange role and alias.

The policy follows the AWS "minimal AWS IoT policy for Greengrass V2 core devices", with every thing name
replaced by ``${iot:Connection.Thing.ThingName}`` so one policy serves the whole fleet and a certificate
can only act as its own thing. The ``${...}`` are IoT policy variables: CDK joins the ARNs with Fn::Join
(never Fn::Sub), so they reach IoT Core verbatim.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from infra import nag
from infra.parts.model_store import COMPONENTS_PREFIX, ModelStore

THING = "${iot:Connection.Thing.ThingName}"


def iot_arn(resource: str) -> str:
    return f"arn:{Aws.PARTITION}:iot:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


class Fleet(Construct):
    """Attributes: ``canary_group``, ``fleet_group``, ``device_policy``, ``token_exchange_role``,
    ``role_alias``."""

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
            role_alias=f"{name_prefix}-token-exchange",
            role_arn=self.token_exchange_role.role_arn,
            credential_duration_seconds=3600,
        )

        self.device_policy = iot.CfnPolicy(
            self,
            "DevicePolicy",
            policy_name=f"{name_prefix}-core-device",
            policy_document=self._device_policy_document(self.role_alias.role_alias or ""),
        )

    @staticmethod
    def _device_policy_document(role_alias_name: str) -> dict[str, Any]:
        own_things = f"$aws/things/{THING}"
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ConnectAsOwnThing",
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": iot_arn(f"client/{THING}"),
                },
                {
                    # docs/contracts.md §4: devices publish their anomalies and health, and nothing else under
                    # edge/ (not their own acks topic: acks come from the cloud only).
                    "Sid": "PublishOwnTelemetry",
                    "Effect": "Allow",
                    "Action": "iot:Publish",
                    "Resource": [
                        iot_arn(f"topic/edge/{THING}/anomalies"),
                        iot_arn(f"topic/edge/{THING}/health"),
                    ],
                },
                {
                    # Under edge/ a device hears only the cloud's acks of its own events (contracts §4):
                    # the exact topic, so no filter on edge/ can reach another thing's or its telemetry.
                    "Sid": "SubscribeOwnTopics",
                    "Effect": "Allow",
                    "Action": "iot:Subscribe",
                    "Resource": [
                        iot_arn(f"topicfilter/edge/{THING}/acks"),
                        iot_arn(f"topicfilter/{own_things}/jobs/*"),
                        iot_arn(f"topicfilter/{own_things}/shadow/*"),
                    ],
                },
                {
                    "Sid": "ReceiveOwnTopics",
                    "Effect": "Allow",
                    "Action": "iot:Receive",
                    "Resource": [
                        iot_arn(f"topic/edge/{THING}/acks"),
                        iot_arn(f"topic/{own_things}/jobs/*"),
                        iot_arn(f"topic/{own_things}/shadow/*"),
                    ],
                },
                {
                    # The nucleus reports status and takes deployments over jobs and the deployment shadow.
                    "Sid": "GreengrassNucleusTopics",
                    "Effect": "Allow",
                    "Action": "iot:Publish",
                    "Resource": [
                        iot_arn(f"topic/{own_things}/greengrass/health/json"),
                        iot_arn(f"topic/{own_things}/greengrassv2/health/json"),
                        iot_arn(f"topic/{own_things}/jobs/*"),
                        iot_arn(f"topic/{own_things}/shadow/*"),
                    ],
                },
                {
                    "Sid": "OwnShadow",
                    "Effect": "Allow",
                    "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"],
                    "Resource": iot_arn(f"thing/{THING}"),
                },
                {
                    "Sid": "TokenExchange",
                    "Effect": "Allow",
                    "Action": "iot:AssumeRoleWithCertificate",
                    "Resource": iot_arn(f"rolealias/{role_alias_name}"),
                },
                {
                    # Greengrass data-plane calls, not resource-scoped in IoT policies (AWS minimal policy).
                    # ListThingGroupsForCoreDevice (nucleus >= 2.5.0): without it the nucleus keeps its
                    # persisted group membership, so a device moved out of the canary group keeps the canary
                    # deployment as a root.
                    "Sid": "GreengrassDataPlane",
                    "Effect": "Allow",
                    "Action": [
                        "greengrass:GetComponentVersionArtifact",
                        "greengrass:ResolveComponentCandidates",
                        "greengrass:GetDeploymentConfiguration",
                        "greengrass:ListThingGroupsForCoreDevice",
                    ],
                    "Resource": "*",
                },
            ],
        }
