"""The retrain function's settings: environment variable names in one place, read once, frozen."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from lambdas.retrain.errors import ConfigError

ENV_JOB_NAME_PREFIX = "JOB_NAME_PREFIX"
ENV_TRAINING_ROLE_ARN = "TRAINING_ROLE_ARN"
ENV_MODEL_STORE_BUCKET = "MODEL_STORE_BUCKET"
# Optional: the model store's KMS key, which SageMaker then uses for the job's output (OutputDataConfig).
ENV_MODEL_STORE_KEY_ARN = "MODEL_STORE_KEY_ARN"
ENV_DATASET = "RETRAIN_DATASET"
ENV_MODEL_NAME = "RETRAIN_MODEL_NAME"
ENV_INSTANCE_TYPE = "RETRAIN_INSTANCE_TYPE"
ENV_MAX_RUNTIME_S = "RETRAIN_MAX_RUNTIME_S"
ENV_COOLDOWN_HOURS = "RETRAIN_COOLDOWN_HOURS"

# training/launch_config.py's defaults, so a retraining runs like a default launch.
DEFAULT_INSTANCE_TYPE: Final = "ml.m5.large"
DEFAULT_MAX_RUNTIME_S: Final = 3600
MAX_RUNTIME_LIMIT_S: Final = 28 * 24 * 3600
DEFAULT_COOLDOWN_HOURS: Final = 24

_PREFIX: Final = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,39}$")
_ROLE_ARN: Final = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_BUCKET: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DATASET: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A key ARN, not an alias: the training role's KMS grant names the key, and an ARN says which account.
_KEY_ARN: Final = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]{1,128}$")


@dataclass(frozen=True)
class RetrainConfig:
    job_name_prefix: str  # the environment's name prefix: every job this function sees or starts
    training_role_arn: str
    model_store_bucket: str
    dataset: str
    model_name: str
    instance_type: str = DEFAULT_INSTANCE_TYPE
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S
    cooldown_hours: int = DEFAULT_COOLDOWN_HOURS
    kms_key_arn: str | None = None  # None: SageMaker encrypts the output with the account's aws/s3 key


def load_config(environ: Mapping[str, str]) -> RetrainConfig:
    """Read the settings from an environment mapping (``os.environ`` in the Lambda)."""
    max_runtime = _positive_int(environ, ENV_MAX_RUNTIME_S, DEFAULT_MAX_RUNTIME_S)
    if max_runtime > MAX_RUNTIME_LIMIT_S:
        raise ConfigError(f"{ENV_MAX_RUNTIME_S}={max_runtime} exceeds SageMaker's {MAX_RUNTIME_LIMIT_S}")
    instance_type = environ.get(ENV_INSTANCE_TYPE) or DEFAULT_INSTANCE_TYPE
    if not instance_type.startswith("ml."):
        raise ConfigError(f"{ENV_INSTANCE_TYPE}={instance_type!r} is not a SageMaker type like ml.m5.large")
    return RetrainConfig(
        job_name_prefix=_matching(environ, ENV_JOB_NAME_PREFIX, _PREFIX),
        training_role_arn=_matching(environ, ENV_TRAINING_ROLE_ARN, _ROLE_ARN),
        model_store_bucket=_matching(environ, ENV_MODEL_STORE_BUCKET, _BUCKET),
        dataset=_matching(environ, ENV_DATASET, _DATASET),
        model_name=_matching(environ, ENV_MODEL_NAME, _DATASET),
        instance_type=instance_type,
        max_runtime_s=max_runtime,
        cooldown_hours=_positive_int(environ, ENV_COOLDOWN_HOURS, DEFAULT_COOLDOWN_HOURS),
        kms_key_arn=_optional_matching(environ, ENV_MODEL_STORE_KEY_ARN, _KEY_ARN),
    )


def _matching(environ: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
    value = environ.get(name, "")
    if not value:
        raise ConfigError(f"environment variable {name} is required")
    if not pattern.match(value):
        raise ConfigError(f"{name}={value!r} does not match {pattern.pattern}")
    return value


def _optional_matching(environ: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str | None:
    return _matching(environ, name, pattern) if environ.get(name) else None


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")
    return value
