"""Greengrass recipe helpers for tests."""

from __future__ import annotations

from typing import Any


def lower_keys(node: Any) -> Any:
    """GDK treats recipe keys case-insensitively: it lower-cases every key before validating."""
    if isinstance(node, dict):
        return {str(k).lower(): lower_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [lower_keys(v) for v in node]
    return node
