"""The publisher's settings: environment variable names in one place, read once into a frozen object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.publisher.errors import ConfigError
from lambdas.publisher.versioning import SemVer

ENV_MODEL_BUCKET = "MODEL_BUCKET"
ENV_MODEL_COMPONENT_NAME = "MODEL_COMPONENT_NAME"
ENV_INFERENCE_COMPONENT_NAME = "INFERENCE_COMPONENT_NAME"
ENV_INFERENCE_COMPONENT_VERSION = "INFERENCE_COMPONENT_VERSION"
ENV_TARGET_THING_GROUP_ARN = "TARGET_THING_GROUP_ARN"
ENV_MAX_MODEL_BYTES = "MAX_MODEL_BYTES"

# Component names are fixed by docs/contracts.md §3; the variables exist so a test stack can use its own.
DEFAULT_MODEL_COMPONENT_NAME = "com.edgeml.AnomalyModel"
DEFAULT_INFERENCE_COMPONENT_NAME = "com.edgeml.AnomalyDetector"
# A Lambda holds the model (and, for SageMaker output, the archive) in memory; 64 MiB is far above our
# detectors (tens of KB) and far below the function's memory.
DEFAULT_MAX_MODEL_BYTES = 64 * 1024 * 1024

_THING_GROUP_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iot:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):thinggroup/(?P<name>[\w:.-]+)$"
)


@dataclass(frozen=True)
class ThingGroupArn:
    """The parts of a thing-group ARN; Greengrass ARNs for the same account and region derive from it."""

    arn: str
    partition: str
    region: str
    account: str
    name: str

    @classmethod
    def parse(cls, arn: str) -> ThingGroupArn:
        match = _THING_GROUP_ARN.match(arn)
        if match is None:
            raise ConfigError(
                f"{ENV_TARGET_THING_GROUP_ARN}={arn!r} is not a thing-group ARN "
                "(arn:aws:iot:<region>:<account>:thinggroup/<name>)"
            )
        return cls(
            arn=arn,
            partition=match["partition"],
            region=match["region"],
            account=match["account"],
            name=match["name"],
        )


@dataclass(frozen=True)
class PublisherConfig:
    model_bucket: str
    model_component_name: str
    inference_component_name: str
    inference_component_version: str
    target: ThingGroupArn
    max_model_bytes: int


def load_config(environ: Mapping[str, str]) -> PublisherConfig:
    """Read the publisher's settings from an environment mapping (``os.environ`` in the Lambda)."""
    max_bytes_text = environ.get(ENV_MAX_MODEL_BYTES, "").strip() or str(DEFAULT_MAX_MODEL_BYTES)
    try:
        max_model_bytes = int(max_bytes_text)
    except ValueError:
        raise ConfigError(f"{ENV_MAX_MODEL_BYTES}={max_bytes_text!r} is not an integer") from None
    if max_model_bytes <= 0:
        raise ConfigError(f"{ENV_MAX_MODEL_BYTES}={max_model_bytes} must be positive")
    inference_version = _required(environ, ENV_INFERENCE_COMPONENT_VERSION)
    try:
        SemVer.parse(inference_version)
    except ValueError as exc:
        raise ConfigError(f"{ENV_INFERENCE_COMPONENT_VERSION}: {exc}") from None
    return PublisherConfig(
        model_bucket=_required(environ, ENV_MODEL_BUCKET),
        model_component_name=environ.get(ENV_MODEL_COMPONENT_NAME, "").strip()
        or DEFAULT_MODEL_COMPONENT_NAME,
        inference_component_name=environ.get(ENV_INFERENCE_COMPONENT_NAME, "").strip()
        or DEFAULT_INFERENCE_COMPONENT_NAME,
        inference_component_version=inference_version,
        target=ThingGroupArn.parse(_required(environ, ENV_TARGET_THING_GROUP_ARN)),
        max_model_bytes=max_model_bytes,
    )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is required and is not set")
    return value
