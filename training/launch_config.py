"""What a training launch needs, validated once: :class:`LaunchConfig` and the launcher's errors.

Free of boto3 and the SageMaker SDK, so the configuration can be built and checked in tests, the CLI and
other parts without paying for the SDK import. SageMaker's request limits (job name, hyperparameter and
tag lengths, counts and character sets, KMS key ids) come from botocore's SageMaker service model
(:func:`service_limits`), the same data botocore validates requests with: botocore checks only minimum
lengths client-side, so without these checks an over-long value is refused by SageMaker after the source
upload. :mod:`training.launch` turns the config into a SageMaker training job (``launch_cloud``) or an
in-process run of the same entry point (``run_local``).
"""

import functools
import json
import math
import re
import secrets
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
# The publisher names a job's model after this hyperparameter (and after the job when it is missing),
# so every cloud launch sends it.
MODEL_NAME_HYPERPARAMETER: Final = "model_name"

# Model store layout (docs/contracts.md section 2) plus the launcher's own prefixes.
DATASETS_PREFIX: Final = "datasets"
TRAINING_OUTPUT_PREFIX: Final = "training-output"
CODE_PREFIX: Final = "code"
# What the code channel and the SDK's sm_drivers channel hold (the role check names one file of each).
REQUIREMENTS_FILE: Final = "requirements.txt"
SOURCE_CODE_JSON: Final = "sourcecode.json"
CODE_CHANNEL: Final = "code"
DRIVERS_CHANNEL: Final = "sm_drivers"

# Job names are "<prefix>-<UTC YYYYmmddHHMMSS>-<token>". The SDK's own names stop at the second, so two
# launches in one second shared a name and a code prefix; the random token keeps them apart.
JOB_TIMESTAMP_FORMAT: Final = "%Y%m%d%H%M%S"
JOB_TOKEN_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"  # noqa: S105 (not a secret)
JOB_TOKEN_LENGTH: Final = 6
JOB_NAME_SUFFIX_LENGTH: Final = 1 + len("YYYYmmddHHMMSS") + 1 + JOB_TOKEN_LENGTH

_ROLE_ARN: Final = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/[\w+=,.@/-]{1,512}"
)
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HYPERPARAMETER_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,255}")
_REGION: Final = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
# A KMS key ARN, not an alias, an alias ARN or a bare key id (which SageMaker also takes): the role check
# simulates the output key's KMS actions on its ARN, and IAM policies name keys by ARN, so an alias would
# leave the check nothing to ask (lambdas/retrain/config.py asks the same of MODEL_STORE_KEY_ARN). One rule
# for both keys, which are usually the same (the ModelStoreKeyArn output).
_KMS_KEY_ARN: Final = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]{1,128}")
_DATASET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# train.py reads these paths from the SM_* environment; passed as hyperparameters they would silently
# override the channel and model directories that SageMaker mounts.
_PATH_ARGUMENTS: Final = frozenset({"train", "model_dir", "output_data_dir"})
# The SageMaker SDK and containers use sagemaker_* hyperparameters for themselves.
_RESERVED_PREFIX: Final = "sagemaker_"
# AWS reserves tag keys starting with aws: in any letter case.
_RESERVED_TAG_PREFIX: Final = "aws:"


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


class JobCreatedError(LaunchError):
    """SageMaker has the training job, but something after its creation failed.

    Not a failed launch: the job runs. Callers report it with the job's name so nobody starts it again.
    """

    def __init__(self, training_job_name: str, reason: str) -> None:
        self.training_job_name = training_job_name
        super().__init__(f"training job {training_job_name} was created, but {reason}")


class JobStateUnknownError(LaunchError):
    """CreateTrainingJob was sent and no answer came back: the job may or may not exist."""

    def __init__(self, training_job_name: str, reason: str) -> None:
        self.training_job_name = training_job_name
        super().__init__(
            f"CreateTrainingJob for {training_job_name} got no answer ({reason}); the job may exist: "
            f"check with `aws sagemaker describe-training-job --training-job-name {training_job_name}` "
            "before launching again"
        )


# ---------------------------------------------------------------------------------------------------
# SageMaker's request limits, from botocore's service model


@dataclass(frozen=True)
class Charset:
    """A character class of the form botocore models use (``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``).

    Python's ``re`` has no ``\\p{...}``: Unicode general categories are checked with ``unicodedata``.
    """

    categories: frozenset[str]
    characters: frozenset[str]

    def allows(self, text: str) -> bool:
        return all(
            char in self.characters or unicodedata.category(char).startswith(tuple(self.categories))
            for char in text
        )

    def describe(self) -> str:
        names = {"L": "letters", "Z": "spaces", "N": "digits"}
        kinds = [names.get(category, f"\\p{{{category}}}") for category in sorted(self.categories)]
        return ", ".join([*kinds, " ".join(sorted(self.characters))])


_CHARSET_PATTERN: Final = re.compile(r"\(?\[(?P<body>[^\]]*)\]\*\)?")


def charset_from_pattern(pattern: str) -> Charset:
    """Translate a botocore ``[...]*`` pattern of ``\\p{X}`` classes and single characters."""
    match = _CHARSET_PATTERN.fullmatch(pattern)
    if match is None:
        raise ValueError(f"unsupported botocore pattern {pattern!r}")
    body, categories, characters, i = match["body"], set(), set(), 0
    while i < len(body):
        if body.startswith("\\p{", i):
            end = body.index("}", i)
            categories.add(body[i + 3 : end])
            i = end + 1
        elif body[i] == "\\":
            characters.add(body[i + 1])
            i += 2
        elif body[i + 1 : i + 2] == "-" and i + 2 < len(body):
            raise ValueError(f"unsupported range in botocore pattern {pattern!r}")
        else:
            characters.add(body[i])
            i += 1
    return Charset(categories=frozenset(categories), characters=frozenset(characters))


@dataclass(frozen=True)
class ServiceLimits:
    """CreateTrainingJob's limits (botocore shapes ``TrainingJobName``, ``HyperParameters``, ``Tag``...)."""

    job_name_max: int
    job_name_pattern: re.Pattern[str]
    hyperparameters_max: int
    hyperparameter_key_max: int
    hyperparameter_value_max: int
    tags_max: int
    tag_key_min: int
    tag_key_max: int
    tag_value_max: int
    tag_key_charset: Charset
    tag_value_charset: Charset
    kms_key_max: int
    kms_key_pattern: re.Pattern[str]


@functools.cache  # the service model is read-only data; loading it takes a fraction of a second
def service_limits() -> ServiceLimits:
    """The limits botocore's SageMaker model declares for ``CreateTrainingJob``."""
    # Imported here: only validation needs it, and botocore is not part of this module's interface.
    import botocore.session  # noqa: PLC0415

    model = botocore.session.get_session().get_service_model("sagemaker")
    request = model.operation_model("CreateTrainingJob").input_shape.members
    job_name = request["TrainingJobName"].metadata
    hyperparameters = request["HyperParameters"]
    tags = request["Tags"]
    tag = tags.member.members
    kms_key = request["OutputDataConfig"].members["KmsKeyId"].metadata
    return ServiceLimits(
        job_name_max=job_name["max"],
        job_name_pattern=re.compile(job_name["pattern"]),
        hyperparameters_max=hyperparameters.metadata["max"],
        hyperparameter_key_max=hyperparameters.key.metadata["max"],
        hyperparameter_value_max=hyperparameters.value.metadata["max"],
        tags_max=tags.metadata["max"],
        tag_key_min=tag["Key"].metadata["min"],
        tag_key_max=tag["Key"].metadata["max"],
        tag_value_max=tag["Value"].metadata["max"],
        tag_key_charset=charset_from_pattern(tag["Key"].metadata["pattern"]),
        tag_value_charset=charset_from_pattern(tag["Value"].metadata["pattern"]),
        kms_key_max=kms_key["max"],
        kms_key_pattern=re.compile(kms_key["pattern"]),
    )


# ---------------------------------------------------------------------------------------------------
# Hyperparameters: what SageMaker stores, and what its container driver makes of it


def stored_hyperparameter(value: HyperparameterValue) -> str:
    """The string ``CreateTrainingJob`` carries: as the SDK stores it, strings as given, numbers as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def job_hyperparameters(hyperparameters: Mapping[str, HyperparameterValue]) -> dict[str, str]:
    """The ``HyperParameters`` of the ``CreateTrainingJob`` request (SageMaker stores strings)."""
    return {name: stored_hyperparameter(value) for name, value in hyperparameters.items()}


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def container_argument(stored: str) -> str:
    """The argv value the SageMaker SDK's container drivers pass to the entry script for ``stored``.

    ``scripts/environment.py`` JSON-decodes each stored string where it can and exports the result as
    ``SM_HPS`` (JSON, which round-trips those values unchanged); ``basic_script_driver.py`` then decodes
    each value *again* where it is still a string and writes non-strings back as JSON. So ``"1.10"``
    arrives as ``1.1``, and the JSON-quoted ``'"1.10"'`` as ``1.1`` too.
    """
    value = _json_or_text(stored)
    if isinstance(value, str):
        value = _json_or_text(value)
    return value if isinstance(value, str) else json.dumps(value)


def _check_shell_safe(name: str, stored: str) -> None:
    # environment.py writes `export SM_HPS='<json>'` (and SM_HP_<NAME>) to a file the container
    # sources: a single quote in a decoded value ends the quoting and the job fails at start.
    if "'" in json.dumps(_json_or_text(stored)):
        raise LaunchConfigError(
            f"hyperparameter {name!r} contains a single quote, which the SageMaker container cannot "
            f"pass on (its driver writes hyperparameters into a shell file in '...' quotes): {stored!r}"
        )


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
    _check_shell_safe(name, stored_hyperparameter(value))


def check_request_hyperparameters(stored: Mapping[str, str], limits: ServiceLimits) -> None:
    """SageMaker's count and length limits on the ``HyperParameters`` map."""
    if len(stored) > limits.hyperparameters_max:
        raise LaunchConfigError(
            f"{len(stored)} hyperparameters: SageMaker accepts at most {limits.hyperparameters_max}"
        )
    for name, text in stored.items():
        if len(name) > limits.hyperparameter_key_max:
            raise LaunchConfigError(
                f"hyperparameter name {name[:40]!r}... is {len(name)} characters: SageMaker accepts at "
                f"most {limits.hyperparameter_key_max}"
            )
        if len(text) > limits.hyperparameter_value_max:
            raise LaunchConfigError(
                f"hyperparameter {name!r} is {len(text)} characters long: SageMaker accepts at most "
                f"{limits.hyperparameter_value_max} per value"
            )


def check_tags(tags: Mapping[str, str], limits: ServiceLimits) -> None:
    """SageMaker's tag limits: count, lengths, characters, and the reserved ``aws:`` key prefix."""
    if len(tags) > limits.tags_max:
        raise LaunchConfigError(f"{len(tags)} tags: SageMaker accepts at most {limits.tags_max}")
    for key, value in tags.items():
        if not limits.tag_key_min <= len(key) <= limits.tag_key_max:
            raise LaunchConfigError(
                f"invalid tag {key!r}: keys are {limits.tag_key_min}-{limits.tag_key_max} characters"
            )
        if key.lower().startswith(_RESERVED_TAG_PREFIX):
            raise LaunchConfigError(f"invalid tag {key!r}: the aws: prefix (in any case) is reserved")
        if len(value) > limits.tag_value_max:
            raise LaunchConfigError(
                f"invalid tag {key!r}: its value is {len(value)} characters, at most "
                f"{limits.tag_value_max} allowed"
            )
        for label, text, charset in (
            ("key", key, limits.tag_key_charset),
            ("value", value, limits.tag_value_charset),
        ):
            if not charset.allows(text):
                raise LaunchConfigError(
                    f"invalid tag {key!r}={value!r}: the {label} may hold only {charset.describe()}"
                )


# ---------------------------------------------------------------------------------------------------
# Job names and where a job's files go


def random_token() -> str:
    """The random part of a job name (36**6 values: same-second launches do not meet)."""
    return "".join(secrets.choice(JOB_TOKEN_ALPHABET) for _ in range(JOB_TOKEN_LENGTH))


def unique_job_name(prefix: str, now: datetime, token: str) -> str:
    """``<prefix>-<YYYYmmddHHMMSS>-<token>``, checked against SageMaker's TrainingJobName pattern."""
    name = f"{prefix}-{now.strftime(JOB_TIMESTAMP_FORMAT)}-{token}"
    limits = service_limits()
    if len(name) > limits.job_name_max or not limits.job_name_pattern.fullmatch(name):
        raise LaunchConfigError(f"training job name {name!r} does not match SageMaker's TrainingJobName")
    return name


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
class JobLayout:
    """One job's S3 locations: its code prefix (never shared with another job) and its channels."""

    name: str
    code_root: S3Uri  # s3://<bucket>/code/<job_name_prefix>/<job>/ : both channels below it
    code: S3Uri  # the code channel
    drivers: S3Uri  # the SDK's sm_drivers channel
    train: S3Uri
    output: S3Uri  # where SageMaker writes <job>/output/model.tar.gz


@dataclass(frozen=True)
class RolePermission:
    """One action the execution role must be allowed, on a concrete resource, with condition keys."""

    action: str
    resource: str
    why: str
    context: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# The launch configuration


@dataclass(frozen=True)
class LaunchConfig:
    """One training launch. Cloud-only fields may be left unset for a local run.

    ``training_image=None`` means the SageMaker scikit-learn framework image of ``region`` (resolved
    by :func:`training.launch.resolve_training_image`, offline). ``code_s3_uri=None`` means a ``code/``
    prefix in the bucket of ``output_s3_uri``, so the source upload lands in the model store rather
    than in the SDK's default ``sagemaker-<region>-<account>`` bucket. ``image_pull_by_role`` says the
    execution role may pull ``training_image`` from a private ECR repository (the platform's role may
    not). ``output_kms_key`` / ``volume_kms_key`` become ``OutputDataConfig.KmsKeyId`` and
    ``ResourceConfig.VolumeKmsKeyId``; unset, SageMaker uses its defaults. Both must be key ARNs: the
    role check simulates the output key's KMS actions on its ARN (``job_role_permissions``), and with an
    alias or a bare key id it would have nothing to check.
    """

    role_arn: str | None = None
    train_s3_uri: str | None = None
    output_s3_uri: str | None = None
    code_s3_uri: str | None = None
    job_name_prefix: str = DEFAULT_JOB_NAME_PREFIX
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    training_image: str | None = None
    image_pull_by_role: bool = False
    source_dir: Path = TRAINING_PACKAGE_DIR
    entry_script: str = DEFAULT_ENTRY_SCRIPT
    requirements: tuple[str, ...] = DEFAULT_REQUIREMENTS
    hyperparameters: Mapping[str, HyperparameterValue] = field(default_factory=dict)
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS
    tags: Mapping[str, str] = field(default_factory=dict)
    region: str = DEFAULT_REGION
    output_kms_key: str | None = None
    volume_kms_key: str | None = None

    def __post_init__(self) -> None:
        limits = service_limits()
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
        prefix_max = limits.job_name_max - JOB_NAME_SUFFIX_LENGTH
        prefix = self.job_name_prefix
        if len(prefix) > prefix_max or not limits.job_name_pattern.fullmatch(prefix):
            raise LaunchConfigError(
                f"job_name_prefix must be 1-{prefix_max} characters of A-Z a-z 0-9 and inner '-' (the "
                f"launcher appends -<UTC time>-<random>), got {self.job_name_prefix!r}"
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
        for label, key in (("output_kms_key", self.output_kms_key), ("volume_kms_key", self.volume_kms_key)):
            if key is not None and (
                len(key) > limits.kms_key_max
                or not limits.kms_key_pattern.fullmatch(key)
                or not _KMS_KEY_ARN.fullmatch(key)
            ):
                raise LaunchConfigError(
                    f"{label} must be a KMS key ARN like arn:aws:kms:us-east-1:123456789012:key/<key id> "
                    f"(at most {limits.kms_key_max} characters), got {key!r}: the execution role's KMS "
                    "permissions are checked on the key's ARN, which an alias or a bare key id does not "
                    "give. aws kms describe-key --key-id <alias or id> --query KeyMetadata.Arn prints it"
                )
        check_tags(self.tags, limits)
        for name, hp_value in self.hyperparameters.items():
            check_hyperparameter(name, hp_value)
        check_request_hyperparameters(job_hyperparameters(self.hyperparameters), limits)

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
        """Where the source package and the SDK's drivers are uploaded (and nowhere else)."""
        if self.code_s3_uri is not None:
            return parse_s3_uri(self.code_s3_uri, label="code_s3_uri")
        output = parse_s3_uri(self.require_cloud().output_s3_uri, label="output_s3_uri")
        return S3Uri(bucket=output.bucket, key=f"{CODE_PREFIX}/")

    def job_layout(self, job_name: str) -> JobLayout:
        """Where job ``job_name`` reads its code and data and writes its output.

        The code prefix is ``<code location>/<job_name_prefix>/<job>/``, the layout the SDK uses for its
        channels (``<key prefix>/<job>/input/<channel>``), pinned here rather than left to the SDK.
        """
        cloud = self.require_cloud()
        code = self.code_location()
        root = "/".join(part for part in (code.key.strip("/"), self.job_name_prefix, job_name) if part)
        output = parse_s3_uri(cloud.output_s3_uri, label="output_s3_uri")
        output_key = output.key if output.key.endswith("/") or not output.key else f"{output.key}/"
        return JobLayout(
            name=job_name,
            code_root=S3Uri(code.bucket, f"{root}/"),
            code=S3Uri(code.bucket, f"{root}/input/{CODE_CHANNEL}"),
            drivers=S3Uri(code.bucket, f"{root}/input/{DRIVERS_CHANNEL}"),
            train=parse_s3_uri(cloud.train_s3_uri, label="train_s3_uri"),
            output=S3Uri(output.bucket, f"{output_key}{job_name}/"),
        )

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


def role_partition(role_arn: str) -> str:
    match = _ROLE_ARN.fullmatch(role_arn)
    if match is None:
        raise LaunchConfigError(f"not an IAM role ARN: {role_arn!r}")
    return match["partition"]


def job_role_permissions(
    cfg: LaunchConfig, layout: JobLayout, *, private_image: "EcrImage | None" = None
) -> list[RolePermission]:
    """What the execution role must be allowed for this job, on this job's own S3 keys and keys.

    SageMaker lists each S3 channel's prefix (``s3:ListBucket`` with ``s3:prefix``) and reads its
    objects; it writes ``<output>/<job>/output/model.tar.gz``. The SDK encrypts the staged code with
    the output KMS key when one is set, so reading the code then needs ``kms:Decrypt`` on it.
    """
    partition = role_partition(cfg.require_cloud().role_arn)

    def bucket(uri: S3Uri) -> str:
        return f"arn:{partition}:s3:::{uri.bucket}"

    def obj(uri: S3Uri, key: str) -> str:
        return f"arn:{partition}:s3:::{uri.bucket}/{key}"

    needs: list[RolePermission] = []
    for channel, uri, sample in (
        (CODE_CHANNEL, layout.code, f"{layout.code.key}/{REQUIREMENTS_FILE}"),
        (DRIVERS_CHANNEL, layout.drivers, f"{layout.drivers.key}/{SOURCE_CODE_JSON}"),
        ("train", layout.train, f"{layout.train.key}*"),
    ):
        needs.append(
            RolePermission(
                "s3:ListBucket", bucket(uri), f"list the {channel} channel", {"s3:prefix": uri.key}
            )
        )
        needs.append(RolePermission("s3:GetObject", obj(uri, sample), f"read the {channel} channel"))
    needs.append(
        RolePermission(
            "s3:PutObject", obj(layout.output, f"{layout.output.key}output/model.tar.gz"), "write the model"
        )
    )
    key = cfg.output_kms_key  # a key ARN (LaunchConfig refuses aliases and bare ids)
    if key is not None:
        needs += [
            RolePermission("kms:GenerateDataKey", key, "encrypt the output with output_kms_key"),
            RolePermission("kms:Encrypt", key, "encrypt the output with output_kms_key"),
            RolePermission("kms:Decrypt", key, "read the code, which is uploaded under output_kms_key"),
        ]
    if private_image is not None:
        needs += [
            RolePermission("ecr:GetAuthorizationToken", "*", "pull the private training image"),
            *(
                RolePermission(action, private_image.repository_arn(partition), "pull the training image")
                for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
            ),
        ]
    return needs


_ECR_IMAGE: Final = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(:[\w.-]+|@sha256:[0-9a-f]{64})"
)


@dataclass(frozen=True)
class EcrImage:
    account: str
    region: str
    repository: str

    def repository_arn(self, partition: str) -> str:
        return f"arn:{partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"


def parse_ecr_image(uri: str) -> EcrImage | None:
    """The registry account, region and repository of an ECR image URI; None for any other image."""
    match = _ECR_IMAGE.fullmatch(uri)
    if match is None:
        return None
    return EcrImage(account=match["account"], region=match["region"], repository=match["repository"])


def check_training_image(
    cfg: LaunchConfig, image: str, sagemaker_accounts: Collection[str]
) -> EcrImage | None:
    """Refuse an image the execution role cannot pull; return it when the role must pull it itself.

    SageMaker pulls its own framework images (registries in ``sagemaker_accounts``) without the role's
    help; any other ECR repository needs ecr:GetAuthorizationToken, ecr:BatchGetImage and
    ecr:GetDownloadUrlForLayer on the role, which the platform's TrainingRole does not grant.
    """
    ecr = parse_ecr_image(image)
    if ecr is None:
        raise LaunchConfigError(
            f"training image {image!r} is not an Amazon ECR image URI "
            "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>): SageMaker training pulls from ECR"
        )
    if ecr.account in sagemaker_accounts:
        return None
    if not cfg.image_pull_by_role:
        raise LaunchConfigError(
            f"training image {image!r} is in a private ECR repository: the execution role would need "
            "ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on it, which the "
            "platform's TrainingRole does not grant. Grant them and pass --role-can-pull-image, or leave "
            "--image out to use the SageMaker scikit-learn image"
        )
    return ecr
