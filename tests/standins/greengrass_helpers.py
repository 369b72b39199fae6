"""Shared helpers for the Greengrass v2 fake tests."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.config import Config

REGION = "us-east-1"
ACCOUNT = "123456789012"


def make_client(endpoint_url: str, *, validate: bool = True) -> Any:
    # No retries: an error must surface at once, and a 500 from a fake bug must not be hidden.
    config = Config(parameter_validation=validate, retries={"max_attempts": 1, "mode": "standard"})
    return boto3.client("greengrassv2", endpoint_url=endpoint_url, region_name=REGION, config=config)


def recipe(name: str = "com.example.Hello", version: str = "1.0.0", **extra: Any) -> bytes:
    document = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDescription": "Says hello",
        "ComponentPublisher": "Example",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "echo hello"}}],
        **extra,
    }
    return json.dumps(document).encode("utf-8")


def thing_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"


def group_arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/{name}"


def version_arn(name: str, version: str) -> str:
    return f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:{name}:versions:{version}"
