"""The Greengrass deployment grants the publisher and the lifecycle function share: create, read and list
deployments to the canary and fleet thing groups, with the dependent IoT actions the Service Authorization
Reference lists for them.

``greengrass:CreateDeployment`` and ``ListDeployments`` have no resource type, so ``*`` is the only
resource IAM matches; the deployment's target is enforced where a resource exists: the ``iot:CreateJob``
Greengrass makes for the deployment (on the job and the target group) and ``iot:DescribeThingGroup``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

from infra import nag
from infra.parts.fleet import iot_arn


def greengrass_arn(resource: str) -> str:
    return f"arn:{Aws.PARTITION}:greengrass:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


@dataclass(frozen=True)
class DeploymentGrants:
    """``groups``: the thing groups deployments may target (canary and fleet)."""

    groups: tuple[str, ...]

    @property
    def deployments(self) -> str:
        return greengrass_arn("deployments:*")

    @property
    def jobs(self) -> str:
        return iot_arn("job/*")

    @property
    def things(self) -> str:
        return iot_arn("thing/*")

    def statements(self) -> list[iam.PolicyStatement]:
        return [
            iam.PolicyStatement(
                sid="CreateDeployment", actions=["greengrass:CreateDeployment"], resources=["*"]
            ),
            iam.PolicyStatement(
                sid="ReadDeployments", actions=["greengrass:GetDeployment"], resources=[self.deployments]
            ),
            iam.PolicyStatement(
                sid="ListDeployments", actions=["greengrass:ListDeployments"], resources=["*"]
            ),
            iam.PolicyStatement(
                sid="DescribeTargetGroups", actions=["iot:DescribeThingGroup"], resources=list(self.groups)
            ),
            # Where CreateDeployment's target is enforced: the job Greengrass creates targets a group.
            iam.PolicyStatement(
                sid="CreateDeploymentJobs", actions=["iot:CreateJob"], resources=[self.jobs, *self.groups]
            ),
            # These take only a job resource.
            iam.PolicyStatement(
                sid="DeploymentJobs",
                actions=["iot:DescribeJob", "iot:UpdateJob", "iot:CancelJob"],
                resources=[self.jobs],
            ),
            # Dependent actions of GetDeployment, ListDeployments and ListEffectiveDeployments (and
            # CreateDeployment); read only, on this account's things.
            iam.PolicyStatement(
                sid="DeploymentTargetReads",
                actions=["iot:DescribeThing", "iot:GetThingShadow"],
                resources=[self.things],
            ),
        ]

    def acknowledge_wildcards(self, policy: iam.Policy) -> None:
        """cdk-nag's wildcard findings on these statements, each with why the wildcard is the boundary."""
        for resource, reason in (
            (
                self.deployments,
                "Deployment ids are minted by CreateDeployment itself; GetDeployment reads them back.",
            ),
            (
                self.jobs,
                "Greengrass names the IoT job of each deployment; CreateJob is scoped to the two groups.",
            ),
            (
                self.things,
                "Read-only dependent actions of Greengrass deployment reads; devices are not known by name.",
            ),
            (
                "*",
                "greengrass:CreateDeployment and ListDeployments support no resource-level permissions "
                "(SAR: no resource type); the target is scoped on iot:CreateJob and iot:DescribeThingGroup.",
            ),
        ):
            nag.acknowledge(policy, nag.wildcard_resource(policy.stack, resource), reason)
