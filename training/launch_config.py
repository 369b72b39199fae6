"""What a training launch needs, validated once: :class:`LaunchConfig` and the launcher's errors.

Pure and SDK-free (no boto3, no SageMaker SDK), so the configuration can be built and checked in tests,
the CLI and other parts without paying for the SDK import. :mod:`training.launch` turns it into a
SageMaker training job (``launch_cloud``) or an in-process run of the same entry point (``run_local``).
"""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

HyperparameterValue = str | int | float

TRAINING_PACKAGE_DIR: Final = Path(__file__).resolve().parent
DEFAULT_ENTRY_SCRIPT: Final = "train.py"
DEFAULT_JOB_NAME_PREFIX: Final = "edgeml-train"
DEFAULT_INSTANCE_TYPE: Final = "ml.m5.large"
DEFAULT_REGION: Final = "us-east-1"
DEFAULT_MAX_RUNTIME_SECONDS: Final = 3600
# SageMaker's hard ceiling for MaxRuntimeInSeconds (28 days).
MAX_RUNTIME_LIMIT_SECONDS: Final = 28 * 24 * 3600
# The entry point's third-party imports, pinned to the versions of the project's requirements.txt
# (a test keeps the two in step). The container installs them before running the entry script.
DEFAULT_REQUIREMENTS: Final = ("numpy==2.4.6", "onnx==1.23.2", "onnxruntime==1.31.1")

# Model store layout (docs/contracts.md section 2) plus the launcher's own prefixes.
DATASETS_PREFIX: Final = "datasets"
TRAINING_OUTPUT_PREFIX: Final = "training-output"
CODE_PREFIX: Final = "code"

# The SDK appends "-YYYYmmddHHMMSS" (15 characters) and truncates job names to SageMaker's 63.
_JOB_PREFIX_MAX: Final = 63 - 15
_JOB_PREFIX: Final = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9])*")
_ROLE_ARN: Final = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HYPERPARAMETER_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,255}")
_REGION: Final = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_DATASET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# train.py reads these paths from the SM_* environment; passed as hyperparameters they would silently
# override the channel and model directories that SageMaker mounts.
_PATH_ARGUMENTS: Final = frozenset({"train", "model_dir", "output_data_dir"})
# The SageMaker SDK and containers use sagemaker_* hyperparameters for themselves.
_RESERVED_PREFIX: Final = "sagemaker_"


class LaunchError(Exception):
    """Base class: every failure the launcher can explain to its caller."""


class LaunchConfigError(LaunchError, ValueError):
    """The launch configuration is invalid or incomplete (bad ARN, bad S3 URI, bad hyperparameter)."""


class LocalTrainingError(LaunchError):
    """The entry point, run in-process, exited with a non-zero code."""

    def __init__(self, exit_code: int, reason: str | None) -> None:
        self.exit_code = exit_code
        self.reason = reason
        detail = f": {reason}" if reason else " (see the training log)"
        super().__init__(f"training exited with code {exit_code}{detail}")


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str, *, label: str) -> S3Uri:
    """Split ``s3://bucket/key`` into its parts; raise LaunchConfigError naming ``label`` if malformed."""
    if not uri.startswith("s3://"):
        raise LaunchConfigError(f"{label} must be an s3://bucket/prefix/ URI, got {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise LaunchConfigError(f"{label} has an invalid bucket name {bucket!r} (in {uri!r})")
    if "//" in key or any(ch.isspace() for ch in key):
        raise LaunchConfigError(f"{label} has an invalid key prefix {key!r} (in {uri!r})")
    return S3Uri(bucket=bucket, key=key)


def dataset_uri(bucket: str, dataset: str) -> str:
    """The model store prefix of one training data set: ``s3://<bucket>/datasets/<dataset>/``."""
    if not _DATASET_NAME.fullmatch(dataset):
        raise LaunchConfigError(f"dataset {dataset!r} must be 1-128 characters of A-Z a-z 0-9 . _ -")
    return str(parse_s3_uri(f"s3://{bucket}/{DATASETS_PREFIX}/{dataset}/", label="dataset URI"))


@dataclass(frozen=True)
class LaunchConfig:
    """One training launch. Cloud-only fields may be left unset for a local run.

    ``training_image=None`` means the SageMaker scikit-learn framework image of ``region`` (resolved
    by :func:`training.launch.resolve_training_image`, offline). ``code_s3_uri=None`` means a ``code/``
    prefix in the bucket of ``output_s3_uri``, so the source upload lands in the model store rather
    than in the SDK's default ``sagemaker-<region>-<account>`` bucket.
    """

    role_arn: str | None = None
    train_s3_uri: str | None = None
    output_s3_uri: str | None = None
    code_s3_uri: str | None = None
    job_name_prefix: str = DEFAULT_JOB_NAME_PREFIX
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    training_image: str | None = None
    source_dir: Path = TRAINING_PACKAGE_DIR
    entry_script: str = DEFAULT_ENTRY_SCRIPT
    requirements: tuple[str, ...] = DEFAULT_REQUIREMENTS
    hyperparameters: Mapping[str, HyperparameterValue] = field(default_factory=dict)
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS
    tags: Mapping[str, str] = field(default_factory=dict)
    region: str = DEFAULT_REGION

    def __post_init__(self) -> None:
        if self.role_arn is not None and not _ROLE_ARN.fullmatch(self.role_arn):
            raise LaunchConfigError(
                f"role_arn must be an IAM role ARN like arn:aws:iam::123456789012:role/name, "
                f"got {self.role_arn!r}"
            )
        for label, uri in (
            ("train_s3_uri", self.train_s3_uri),
            ("output_s3_uri", self.output_s3_uri),
            ("code_s3_uri", self.code_s3_uri),
        ):
            if uri is not None:
                parse_s3_uri(uri, label=label)
        if len(self.job_name_prefix) > _JOB_PREFIX_MAX or not _JOB_PREFIX.fullmatch(self.job_name_prefix):
            raise LaunchConfigError(
                f"job_name_prefix must be 1-{_JOB_PREFIX_MAX} characters of A-Z a-z 0-9 and inner '-', "
                f"got {self.job_name_prefix!r}"
            )
        if not self.instance_type.startswith("ml."):
            raise LaunchConfigError(
                f"instance_type must be a SageMaker type like ml.m5.large, got {self.instance_type!r}"
            )
        if isinstance(self.instance_count, bool) or self.instance_count < 1:
            raise LaunchConfigError(f"instance_count must be >= 1, got {self.instance_count!r}")
        if not 1 <= self.max_runtime_seconds <= MAX_RUNTIME_LIMIT_SECONDS:
            raise LaunchConfigError(
                f"max_runtime_seconds must be in [1, {MAX_RUNTIME_LIMIT_SECONDS}], "
                f"got {self.max_runtime_seconds}"
            )
        if not _REGION.fullmatch(self.region):
            raise LaunchConfigError(f"region must look like us-east-1, got {self.region!r}")
        if not self.entry_script.endswith(".py") or "/" in self.entry_script:
            raise LaunchConfigError(
                f"entry_script must be a .py file directly in source_dir, got {self.entry_script!r}"
            )
        for key, value in self.tags.items():
            if not key or len(key) > 128 or len(value) > 256 or key.startswith("aws:"):
                raise LaunchConfigError(f"invalid tag {key!r}={value!r}: keys 1-128 chars, not aws:*")
        for name, hp_value in self.hyperparameters.items():
            check_hyperparameter(name, hp_value)

    @classmethod
    def for_model_store(
        cls,
        *,
        bucket: str,
        dataset: str,
        **overrides: Any,
    ) -> "LaunchConfig":
        """A config whose data, output and code all live in the model store bucket.

        Train channel ``s3://<bucket>/datasets/<dataset>/``, output ``s3://<bucket>/training-output/``,
        source upload ``s3://<bucket>/code/``; any other field comes from ``overrides``.
        """
        store = {
            "train_s3_uri": dataset_uri(bucket, dataset),
            "output_s3_uri": f"s3://{bucket}/{TRAINING_OUTPUT_PREFIX}/",
            "code_s3_uri": f"s3://{bucket}/{CODE_PREFIX}/",
        }
        return cls(**{**store, **overrides})

    def code_location(self) -> S3Uri:
        """Where the SDK uploads the source package and its drivers."""
        if self.code_s3_uri is not None:
            return parse_s3_uri(self.code_s3_uri, label="code_s3_uri")
        output = parse_s3_uri(self.require_cloud().output_s3_uri, label="output_s3_uri")
        return S3Uri(bucket=output.bucket, key=f"{CODE_PREFIX}/")

    def require_cloud(self) -> "CloudFields":
        """The fields a SageMaker launch cannot do without; raise naming every one that is missing."""
        role_arn, train_s3_uri, output_s3_uri = self.role_arn, self.train_s3_uri, self.output_s3_uri
        if role_arn is None or train_s3_uri is None or output_s3_uri is None:
            missing = [
                name
                for name, value in (
                    ("role_arn", role_arn),
                    ("train_s3_uri", train_s3_uri),
                    ("output_s3_uri", output_s3_uri),
                )
                if value is None
            ]
            raise LaunchConfigError(
                f"a SageMaker training job needs {', '.join(missing)}: the IAM execution role the job "
                "runs as, the S3 prefix of its train channel and the S3 prefix for its output"
            )
        return CloudFields(role_arn=role_arn, train_s3_uri=train_s3_uri, output_s3_uri=output_s3_uri)


@dataclass(frozen=True)
class CloudFields:
    role_arn: str
    train_s3_uri: str
    output_s3_uri: str


def check_hyperparameter(name: str, value: object) -> None:
    if not _HYPERPARAMETER_NAME.fullmatch(name):
        raise LaunchConfigError(f"hyperparameter name {name!r} must match [A-Za-z][A-Za-z0-9_]*")
    if name.startswith(_RESERVED_PREFIX):
        raise LaunchConfigError(f"hyperparameter {name!r}: the sagemaker_ prefix is reserved for the SDK")
    if name in _PATH_ARGUMENTS:
        raise LaunchConfigError(
            f"hyperparameter {name!r} is a path the job takes from its SM_* environment; "
            "set the channel or model directory instead"
        )
    # bool is an int subclass; booleans are not part of the entry point's interface.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise LaunchConfigError(
            f"hyperparameter {name!r} must be a str, int or float, got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise LaunchConfigError(f"hyperparameter {name!r} must be finite, got {value!r}")
