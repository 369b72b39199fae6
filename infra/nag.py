"""Acknowledging cdk-nag findings, one finding and one reason at a time.

cdk-nag 3 runs as a CDK policy-validation plugin; a finding is silenced with
``Validations.of(construct).acknowledge(...)`` on the construct or an ancestor, by its exact id. Wildcard
findings (AwsSolutions-IAM5) carry the flattened resource or action in the id, so ``wildcard_resource``
computes that id from the same token the policy uses, instead of copying hash-suffixed strings around.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

WILDCARD_RULE = "AwsSolutions-IAM5"


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one finding on ``scope`` and everything below it."""
    if not reason.strip():
        raise ValueError(f"acknowledging {rule_id} needs a reason")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def wildcard_resource(scope: IConstruct, resource: str) -> str:
    """The AwsSolutions-IAM5 finding id that a policy resource ``resource`` (may hold tokens) produces."""
    resolved = Stack.of(scope).resolve(resource)
    return f"{WILDCARD_RULE}[Resource::{flatten_cfn_reference(resolved)}]"


def wildcard_action(action: str) -> str:
    return f"{WILDCARD_RULE}[Action::{action}]"


def flatten_cfn_reference(node: Any) -> str:
    """Mirror of cdk-nag's ``flattenCfnReference``: intrinsics become ``<Ref>`` / ``<Res.Attr>`` text."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        for function, flatten in _INTRINSICS.items():
            if function in node:
                return flatten(node[function])
    # cdk-nag falls back to JSON.stringify, which writes no spaces.
    return json.dumps(node, separators=(",", ":"))


def _join(arguments: Any) -> str:
    delimiter, items = arguments
    return str(delimiter).join(flatten_cfn_reference(item) for item in items)


def _get_att(arguments: Any) -> str:
    resource, attribute = arguments
    return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"


def _ref(argument: Any) -> str:
    return f"<{flatten_cfn_reference(argument)}>"


# Checked in cdk-nag's order.
_INTRINSICS: dict[str, Callable[[Any], str]] = {
    "Fn::Join": _join,
    "Fn::Sub": flatten_cfn_reference,
    "Fn::GetAtt": _get_att,
    "Fn::ImportValue": flatten_cfn_reference,
    "Ref": _ref,
}
