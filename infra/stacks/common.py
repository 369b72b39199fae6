"""Small translations from the plain config to CDK values, shared by the stacks."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs

from infra import nag
from infra.config import PlatformConfig, Removal

# CloudWatch Logs accepts only these periods; infra.config.LOG_RETENTION_DAYS validates against the keys.
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def removal_policy(config: PlatformConfig) -> RemovalPolicy:
    return RemovalPolicy.DESTROY if config.removal is Removal.DESTROY else RemovalPolicy.RETAIN


def log_retention(config: PlatformConfig) -> logs.RetentionDays:
    return _RETENTION[config.log_retention_days]


def acknowledge_lambda_defaults(role: iam.IRole) -> None:
    """Lambda's own defaults on a function role: X-Ray segments and ECR auth take no resource ARN."""
    default_policy = role.node.try_find_child("DefaultPolicy")
    if default_policy is not None:
        nag.acknowledge(
            default_policy,
            nag.wildcard_resource(role, "*"),
            "X-Ray writes and ecr:GetAuthorizationToken take only '*' (CDK adds them: tracing, image).",
        )
