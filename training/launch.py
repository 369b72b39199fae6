"""Start the training entry point as a SageMaker training job, or run it in-process with the same contract.

    python -m training.launch cloud --bucket B --dataset nab --role-arn arn:aws:iam::...:role/R
    python -m training.launch local --data-dir tests/training/data --model-dir build/model

Both paths run ``training/train.py`` with the job's hyperparameters as ``--name value`` arguments, as
the SageMaker SDK's container driver decodes them, and its paths in ``SM_MODEL_DIR`` /
``SM_CHANNEL_TRAIN`` / ``SM_OUTPUT_DATA_DIR``. The cloud path stages the code with the SageMaker SDK v3
``ModelTrainer`` and sends one ``CreateTrainingJob`` itself (no waiting). Every AWS call goes through the
boto3 session passed in, so ``AWS_ENDPOINT_URL`` points it at moto.

What the launcher decides rather than the SDK, and why:

* the job name, ``<prefix>-<UTC time>-<random>``: the SDK names to the second, so two launches in one
  second shared a name and overwrote each other's code;
* where the code goes, always ``cfg.code_location()``: the SDK simulates ``s3:PutObject`` for the
  *execution role* and, denied (the platform's role may not write ``code/``), stages under the output
  path instead, which that role may write but not read;
* the role check: the SDK's generic one asks for ECR, CloudWatch and EC2 permissions the platform's role
  deliberately lacks; the launcher simulates what this job needs, on this job's keys.
"""

import argparse
import contextlib
import functools
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import boto3
from boto3.exceptions import RetriesExceededError, S3TransferFailedError, S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
)

from training.errors import TrainingError
from training.launch_config import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_JOB_NAME_PREFIX,
    DEFAULT_MAX_RUNTIME_SECONDS,
    DEFAULT_REGION,
    MODEL_NAME_HYPERPARAMETER,
    REQUIREMENTS_FILE,
    EcrImage,
    HyperparameterValue,
    JobCreatedError,
    JobLayout,
    JobStateUnknownError,
    LaunchConfig,
    LaunchConfigError,
    LaunchError,
    LocalTrainingError,
    RolePermission,
    check_request_hyperparameters,
    check_training_image,
    container_argument,
    job_hyperparameters,
    job_role_permissions,
    random_token,
    service_limits,
    unique_job_name,
)
from training.logs import configure_logging

# Python 3.12 variant of the scikit-learn 1.4-2 framework image: train.py needs Python >= 3.11
# (datetime.UTC) and the numpy 2.4 pin needs >= 3.11, which the plain 1.4-2 image (Python 3.10) lacks.
SKLEARN_FRAMEWORK_VERSION: Final = "1.4-2-py312"
MODEL_FILE: Final = "model.onnx"
TRAIN_CHANNEL: Final = "train"
ENV_MODEL_DIR: Final = "SM_MODEL_DIR"
ENV_CHANNEL_TRAIN: Final = "SM_CHANNEL_TRAIN"
ENV_OUTPUT_DATA_DIR: Final = "SM_OUTPUT_DATA_DIR"
ENV_OUTPUT_DIR: Final = "SM_OUTPUT_DIR"
# The SDK's documented switch for its client-side IAM role check (iam:SimulatePrincipalPolicy).
ENV_VALIDATE_ROLE: Final = "SAGEMAKER_VALIDATE_ROLE"
ENV_REGIONS: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")
# Defaults of --output-kms-key / --volume-kms-key (e.g. the ModelStoreKeyArn stack output).
ENV_OUTPUT_KMS_KEY: Final = "TRAINING_OUTPUT_KMS_KEY"
ENV_VOLUME_KMS_KEY: Final = "TRAINING_VOLUME_KMS_KEY"
# An explicit SDK config: telemetry off (it would call STS and a public S3 URL outside the injected
# endpoint), and no user-level config file silently adding defaults to the job.
SDK_CONFIG: Final[Mapping[str, object]] = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}
# Never shipped to the training container.
_STAGING_IGNORE: Final = ("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")
# IAM's answers when the caller may not simulate (the check is then skipped) or the role does not exist.
_CANNOT_SIMULATE: Final = frozenset({"AccessDenied", "AccessDeniedException"})
_NO_SUCH_ROLE: Final = frozenset({"NoSuchEntity", "NoSuchEntityException"})
# botocore errors raised before a request is sent: CreateTrainingJob certainly did not happen.
_NOT_SENT: Final = (ParamValidationError, NoCredentialsError, NoRegionError)

# Failures of an AWS call: API errors, transport errors, and boto3's S3 transfer errors (an upload
# refused by S3 surfaces as S3UploadFailedError, which is neither a ClientError nor a BotoCoreError).
AWS_ERRORS: Final = (
    ClientError,
    BotoCoreError,
    S3UploadFailedError,
    S3TransferFailedError,
    RetriesExceededError,
)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_AWS: Final = 3

_log = logging.getLogger("training.launch")


# ---------------------------------------------------------------------------------------------------
# Hyperparameters: the same strings reach train.py in the container and in-process.


def entry_point_args(hyperparameters: Mapping[str, HyperparameterValue]) -> list[str]:
    """The argv the SDK's container driver gives the entry script: ``--name value`` per hyperparameter.

    Each value as the driver decodes it (:func:`training.launch_config.container_argument`), so a local
    run sees what a SageMaker job sees; :func:`check_hyperparameters` refuses values that decoding
    would change for the entry point.
    """
    args: list[str] = []
    for name, text in job_hyperparameters(hyperparameters).items():
        args += [f"--{name}", container_argument(text)]
    return args


# ---------------------------------------------------------------------------------------------------
# The entry point


@dataclass(frozen=True)
class EntryPoint:
    module: ModuleType
    main: Callable[[list[str]], int]
    parse_args: Callable[[list[str]], object]


def load_entry_point(cfg: LaunchConfig) -> EntryPoint:
    """Import ``<source_dir name>.<entry script>``, checking it is the file the cloud job would run."""
    script = cfg.source_dir / cfg.entry_script
    if not script.is_file():
        raise LaunchConfigError(f"entry script {script} does not exist")
    module_name = f"{cfg.source_dir.name}.{script.stem}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LaunchConfigError(
            f"cannot import {module_name} (is {cfg.source_dir.parent} importable?)"
        ) from exc
    if module.__file__ is None or Path(module.__file__).resolve() != script.resolve():
        raise LaunchConfigError(
            f"{module_name} resolves to {module.__file__}, not to the entry script {script}"
        )
    main, parse_args = getattr(module, "main", None), getattr(module, "parse_args", None)
    if not callable(main) or not callable(parse_args):
        raise LaunchConfigError(f"{module_name} must define main(argv) and parse_args(argv)")
    return EntryPoint(module=module, main=main, parse_args=parse_args)


def check_hyperparameters(cfg: LaunchConfig, entry: EntryPoint) -> object:
    """Let the entry point's own parser judge the hyperparameters before any instance is paid for.

    Returns what the parser makes of the values as typed. A value the container driver would rewrite
    into something the parser reads differently (``model_version=1.10`` arrives as ``1.1``) is refused:
    the job would silently train with another value than the one given. Rewrites the parser reads the
    same (``1e-3`` as ``0.001``, a JSON list re-spaced) pass.
    """
    stored = job_hyperparameters(cfg.hyperparameters)
    typed = [arg for name, text in stored.items() for arg in (f"--{name}", text)]
    try:
        meant = entry.parse_args(typed)
    except TrainingError as exc:
        raise LaunchConfigError(f"the entry point rejects the hyperparameters: {exc}") from exc
    for index, (name, text) in enumerate(stored.items()):
        sent = container_argument(text)
        if sent == text:
            continue
        argv = [*typed[: 2 * index + 1], sent, *typed[2 * index + 2 :]]
        try:
            seen: object = entry.parse_args(argv)
        except TrainingError:
            seen = None
        if seen != meant:
            raise LaunchConfigError(
                f"hyperparameter {name}={text!r} would reach the entry point as {sent!r}: SageMaker's "
                "container driver decodes every value as JSON, twice, so a value that reads as a JSON "
                "number, list or quoted string is rewritten. Give one that is not JSON (e.g. v1.10 "
                "rather than 1.10)"
            )
    return meant


def model_name_of(parsed: object) -> str:
    """The model name the entry point will use (its own default when none is given)."""
    name = getattr(parsed, MODEL_NAME_HYPERPARAMETER, None)
    if not isinstance(name, str) or not name:
        raise LaunchConfigError(
            f"the entry point has no default {MODEL_NAME_HYPERPARAMETER}: "
            f"pass -p {MODEL_NAME_HYPERPARAMETER}=NAME"
        )
    return name


def stage_source(cfg: LaunchConfig, dest: Path) -> str:
    """Lay out what the job's ``code`` channel holds; return the entry script's path inside it.

    train.py imports its siblings as ``training.<module>``, so the channel holds the package directory
    itself (not its contents) next to a ``requirements.txt`` the container installs first.
    """
    package = cfg.source_dir.name
    shutil.copytree(cfg.source_dir, dest / package, ignore=shutil.ignore_patterns(*_STAGING_IGNORE))
    (dest / REQUIREMENTS_FILE).write_text("".join(f"{line}\n" for line in cfg.requirements))
    return f"{package}/{cfg.entry_script}"


# ---------------------------------------------------------------------------------------------------
# Cloud


def resolve_training_image(cfg: LaunchConfig) -> str:
    """The configured image, or the SDK's scikit-learn training image for the region (offline lookup)."""
    if cfg.training_image is not None:
        return cfg.training_image
    # Imported here: the SDK takes seconds to import and only the cloud path needs it.
    from sagemaker.core import image_uris  # noqa: PLC0415

    try:
        uri: str = image_uris.retrieve(
            framework="sklearn",
            region=cfg.region,
            version=SKLEARN_FRAMEWORK_VERSION,
            py_version="py3",
            instance_type=cfg.instance_type,
            image_scope="training",
        )
    except ValueError as exc:
        raise LaunchConfigError(f"no scikit-learn training image for region {cfg.region}: {exc}") from exc
    return uri


def sagemaker_registry_accounts(region: str) -> frozenset[str]:
    """Accounts of the ECR registries SageMaker's own images live in for ``region`` (the SDK's table)."""
    from sagemaker.core import image_uris  # noqa: PLC0415

    accounts: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            registries = node.get("registries")
            if isinstance(registries, dict) and isinstance(registries.get(region), str):
                accounts.add(registries[region])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for path in (Path(image_uris.__file__).parent / "image_uri_config").glob("*.json"):
        collect(json.loads(path.read_text()))
    return frozenset(accounts)


def check_role(iam: Any, role_arn: str, permissions: Sequence[RolePermission]) -> None:
    """Simulate ``permissions`` for the execution role; raise naming every one IAM denies.

    A caller that may not call iam:SimulatePrincipalPolicy gets a warning and no check, like the SDK's
    own check; a denial IAM cannot evaluate (conditional SCPs, permissions boundaries) is not a refusal.
    """
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[RolePermission]] = {}
    for permission in permissions:
        group_key = (permission.resource, tuple(sorted(permission.context.items())))
        groups.setdefault(group_key, []).append(permission)
    denied: list[RolePermission] = []
    for (resource, context), group in groups.items():
        request: dict[str, Any] = {
            "PolicySourceArn": role_arn,
            "ActionNames": [p.action for p in group],
            "ResourceArns": [resource],
        }
        if context:
            request["ContextEntries"] = [
                {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "string"}
                for key, value in context
            ]
        try:
            pages = iam.get_paginator("simulate_principal_policy").paginate(**request)
            results = [result for page in pages for result in page.get("EvaluationResults", [])]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _CANNOT_SIMULATE:
                _log.warning(
                    "execution role not checked: this caller may not call iam:SimulatePrincipalPolicy",
                    extra={"role_arn": role_arn, "reason": str(exc)},
                )
                return
            if code in _NO_SUCH_ROLE:
                raise LaunchConfigError(f"the execution role {role_arn} does not exist") from exc
            raise
        decisions = {r["EvalActionName"]: r for r in results}
        for permission in group:
            result = decisions.get(permission.action)
            if result is None or result.get("EvalDecision") == "allowed" or _unverifiable(result):
                continue
            denied.append(permission)
    if denied:
        lines = "; ".join(f"{p.action} on {p.resource} (to {p.why})" for p in denied)
        raise LaunchConfigError(f"the execution role {role_arn} may not: {lines}")


def _unverifiable(result: Mapping[str, Any]) -> bool:
    # As the SDK judges it: an implicit deny that an SCP or a permissions boundary caused cannot be
    # evaluated by the simulator, so it says nothing about the role's own policy.
    organizations = result.get("OrganizationsDecisionDetail", {})
    boundary = result.get("PermissionsBoundaryDecisionDetail", {})
    return result.get("EvalDecision") == "implicitDeny" and (
        organizations.get("AllowedByOrganizations") is False
        or boundary.get("AllowedByPermissionsBoundary") is False
    )


def refuse_existing_code(s3: Any, layout: JobLayout) -> None:
    """Never upload over another job's code: the code prefix must be empty."""
    listed = s3.list_objects_v2(Bucket=layout.code_root.bucket, Prefix=layout.code_root.key, MaxKeys=1)
    if listed.get("KeyCount", 0) > 0:
        raise LaunchError(
            f"{layout.code_root} already holds objects: refusing to overwrite the code of job "
            f"{layout.name}. Job names are unique per launch; launch again for a new one"
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def launch_cloud(
    cfg: LaunchConfig,
    *,
    boto_session: boto3.Session | None = None,
    validate_role: bool = True,
    clock: Callable[[], datetime] = _utc_now,
    token: Callable[[], str] = random_token,
) -> str:
    """Create the SageMaker training job (without waiting for it) and return its name.

    ``boto_session`` (a ``boto3.Session``) carries credentials, region and, via ``AWS_ENDPOINT_URL``,
    the endpoint of every call: the role simulation, the source upload to ``cfg.code_location()`` and
    the ``CreateTrainingJob`` request. ``validate_role=False`` skips the role simulation (moto does not
    implement iam:SimulatePrincipalPolicy). ``clock`` and ``token`` make the job name.

    Raises :class:`JobCreatedError` (with the job's name) when the job exists but something after its
    creation failed, and :class:`JobStateUnknownError` when CreateTrainingJob got no answer.
    """
    cloud = cfg.require_cloud()
    entry = load_entry_point(cfg)
    parsed = check_hyperparameters(cfg, entry)
    hyperparameters = dict(cfg.hyperparameters)
    # The publisher names the model after this hyperparameter, falling back to the *job* name.
    hyperparameters.setdefault(MODEL_NAME_HYPERPARAMETER, model_name_of(parsed))
    check_request_hyperparameters(job_hyperparameters(hyperparameters), service_limits())
    image = resolve_training_image(cfg)
    private_image: EcrImage | None = check_training_image(cfg, image, sagemaker_registry_accounts(cfg.region))

    session = boto_session if boto_session is not None else boto3.Session(region_name=cfg.region)
    if session.region_name != cfg.region:
        raise LaunchConfigError(f"the boto3 session is in {session.region_name}, the config in {cfg.region}")
    layout = cfg.job_layout(unique_job_name(cfg.job_name_prefix, clock(), token()))
    if validate_role:
        permissions = job_role_permissions(cfg, layout, private_image=private_image)
        check_role(session.client("iam"), cloud.role_arn, permissions)
    refuse_existing_code(session.client("s3"), layout)
    request = _staged_request(cfg, layout, session=session, image=image, hyperparameters=hyperparameters)
    _create(session.client("sagemaker"), request, layout.name)
    try:
        _log.info(
            "training job created",
            extra={
                "training_job_name": layout.name,
                "region": cfg.region,
                "training_image": image,
                "train_s3_uri": cloud.train_s3_uri,
                "output_s3_uri": cloud.output_s3_uri,
                "code_s3_uri": str(layout.code_root),
                "instance_type": cfg.instance_type,
                "instance_count": cfg.instance_count,
            },
        )
    except Exception as exc:  # the job runs: whatever failed here must not read as a failed launch
        raise JobCreatedError(layout.name, f"{type(exc).__name__}: {exc}") from exc
    return layout.name


def _create(sagemaker: Any, request: Mapping[str, Any], name: str) -> None:
    """Send CreateTrainingJob; tell "not created" from "created" from "nobody knows"."""
    try:
        sagemaker.create_training_job(**request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceInUse":
            # The name is fresh and its code prefix was empty, so only an earlier attempt of this very
            # request (botocore retries throttling and 5xx answers) can have created the job.
            raise JobCreatedError(name, f"CreateTrainingJob answered {exc}") from exc
        raise
    except _NOT_SENT:
        raise
    except BotoCoreError as exc:  # the connection dropped or timed out, maybe after the request went out
        raise JobStateUnknownError(name, f"{type(exc).__name__}: {exc}") from exc


def _staged_request(
    cfg: LaunchConfig,
    layout: JobLayout,
    *,
    session: boto3.Session,
    image: str,
    hyperparameters: Mapping[str, HyperparameterValue],
) -> dict[str, Any]:
    """Stage and upload the code through the SDK; the ``CreateTrainingJob`` request it builds."""
    cloud = cfg.require_cloud()
    code = cfg.code_location()
    # Imported here: the SDK takes seconds to import and only the cloud path needs it.
    from sagemaker.core.helper.session_helper import Session  # noqa: PLC0415
    from sagemaker.core.training.configs import (  # noqa: PLC0415
        Compute,
        InputData,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
    )
    from sagemaker.core.training.constants import SM_CODE_CONTAINER_PATH  # noqa: PLC0415

    sm_session = Session(
        boto_session=session,
        default_bucket=code.bucket,
        default_bucket_prefix=code.key.strip("/") or None,
        sagemaker_config=dict(SDK_CONFIG),
    )
    with tempfile.TemporaryDirectory(prefix="edgeml-launch-") as staging:
        entry_script = stage_source(cfg, Path(staging))
        trainer = None
        try:
            # The SDK's generic role check stays off: the launcher checked what this job needs.
            with scoped_environ({ENV_VALIDATE_ROLE: "false"}):
                trainer = _model_store_trainer()(
                    sagemaker_session=sm_session,
                    role=cloud.role_arn,
                    base_job_name=cfg.job_name_prefix,
                    training_image=image,
                    source_code=SourceCode(
                        source_dir=staging,
                        entry_script=entry_script,
                        requirements=REQUIREMENTS_FILE,
                        ignore_patterns=[],
                    ),
                    compute=Compute(
                        instance_type=cfg.instance_type,
                        instance_count=cfg.instance_count,
                        volume_kms_key_id=cfg.volume_kms_key,
                    ),
                    stopping_condition=StoppingCondition(max_runtime_in_seconds=cfg.max_runtime_seconds),
                    output_data_config=OutputDataConfig(
                        s3_output_path=cloud.output_s3_uri, kms_key_id=cfg.output_kms_key
                    ),
                    input_data_config=[InputData(channel_name=TRAIN_CHANNEL, data_source=cloud.train_s3_uri)],
                    hyperparameters=job_hyperparameters(hyperparameters),
                    # The entry script runs as a file (training/train.py), so its package's parent
                    # must be on the path for "import training.<module>" to resolve.
                    environment={"PYTHONPATH": SM_CODE_CONTAINER_PATH},
                    tags=[Tag(key=key, value=value) for key, value in cfg.tags.items()] or None,
                )
                trainer.pin(job_name=layout.name, staging_bucket=code.bucket)
                # The request train() would send (its PipelineSession path uses the same call), sent by
                # the launcher itself: train() also names the job and describes it after creating it,
                # and a failing describe there read as a failed launch of a job that exists.
                request: dict[str, Any] = trainer._create_training_job_args(boto3=True)
        except ValueError as exc:  # the SDK's own validation (pydantic models, paths)
            raise LaunchConfigError(f"the SageMaker SDK rejects the configuration: {exc}") from exc
        finally:
            if trainer is not None:
                trainer.cleanup()
    request["TrainingJobName"] = layout.name
    return request


@functools.cache  # one class per process: it subclasses the SDK's, which is imported only when needed
def _model_store_trainer() -> type[Any]:
    """The SDK's ``ModelTrainer``, with the job name and the staging bucket pinned by the launcher."""
    from pydantic import PrivateAttr  # noqa: PLC0415
    from sagemaker.train.model_trainer import ModelTrainer  # noqa: PLC0415

    class ModelStoreTrainer(ModelTrainer):  # type: ignore[misc]  # the SDK ships no type hints
        _edgeml_job_name: str = PrivateAttr(default="")
        _edgeml_staging_bucket: str = PrivateAttr(default="")

        def pin(self, *, job_name: str, staging_bucket: str) -> None:
            self._edgeml_job_name = job_name
            self._edgeml_staging_bucket = staging_bucket

        def _resolve_staging_bucket(self) -> tuple[str, None]:
            # The SDK asks IAM whether the *execution role* may write <bucket>/*; the platform's role
            # may not (it only reads code/), so the SDK would stage under the output path, which the
            # role cannot read. The caller uploads, so the configured code location it is, always.
            return self._edgeml_staging_bucket, None

        def create_input_data_channel(
            self, channel_name: str, data_source: Any, key_prefix: str | None = None, **kwargs: Any
        ) -> Any:
            # The SDK passes "<base>/<its own job name>/input"; the key must carry the launcher's name.
            if key_prefix is not None:
                key_prefix = f"{self.base_job_name}/{self._edgeml_job_name}/input"
            return super().create_input_data_channel(
                channel_name, data_source, key_prefix=key_prefix, **kwargs
            )

        def cleanup(self) -> None:
            # train() would remove the drivers' temporary directory; the launcher does not call it.
            temp = self._temp_code_dir
            if temp is not None:
                temp.cleanup()

    return ModelStoreTrainer


# ---------------------------------------------------------------------------------------------------
# Local


def run_local(cfg: LaunchConfig, *, data_dir: Path, model_dir: Path, output_dir: Path | None = None) -> Path:
    """Run the entry point in-process as SageMaker would run it; return the path of ``model.onnx``.

    ``data_dir`` plays the train channel, ``model_dir`` the model directory; ``output_dir`` (default: a
    sibling ``output`` of ``model_dir``) plays ``/opt/ml/output``, with output data in its ``data/``.
    The hyperparameters are checked and decoded as for a cloud job. The process environment is restored
    afterwards. Raises :class:`LocalTrainingError` on a non-zero exit, with the reason the entry point
    wrote to ``<output_dir>/failure``.
    """
    entry = load_entry_point(cfg)
    check_hyperparameters(cfg, entry)
    output = output_dir if output_dir is not None else model_dir.parent / "output"
    failure_file = output / "failure"
    failure_file.unlink(missing_ok=True)
    args = entry_point_args(cfg.hyperparameters)
    env = {
        ENV_CHANNEL_TRAIN: str(data_dir),
        ENV_MODEL_DIR: str(model_dir),
        ENV_OUTPUT_DATA_DIR: str(output / "data"),
        ENV_OUTPUT_DIR: str(output),
    }
    _log.info(
        "running the entry point locally", extra={"entry_module": entry.module.__name__, "argv": args, **env}
    )
    with scoped_environ(env):
        exit_code = entry.main(args)
    if exit_code != 0:
        reason = failure_file.read_text().strip() if failure_file.is_file() else None
        raise LocalTrainingError(exit_code, reason)
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise LaunchError(f"training exited with 0 but wrote no {model_path}")
    return model_path


@contextlib.contextmanager
def scoped_environ(updates: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, remove) variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in updates}
    try:
        for name, value in updates.items():
            _set_env(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_env(name, value)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# ---------------------------------------------------------------------------------------------------
# CLI


def parse_key_value(text: str) -> tuple[str, str]:
    """argparse ``type`` for ``NAME=VALUE`` options (also ``edgeml train``'s)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def default_region(environ: Mapping[str, str]) -> str:
    """The first of ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` that is set, else :data:`DEFAULT_REGION`."""
    return next((environ[name] for name in ENV_REGIONS if environ.get(name)), DEFAULT_REGION)


def add_hyperparameter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hyperparameter",
        "-p",
        dest="hyperparameters",
        action="append",
        type=parse_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="passed to training/train.py as --NAME VALUE (repeatable), e.g. -p window_length=32; a value "
        "SageMaker's driver would rewrite (1.10 read as the number 1.1) is refused",
    )


def add_cloud_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """The cloud options of ``python -m training.launch cloud`` and ``edgeml train sagemaker``."""
    parser.add_argument("--bucket", required=True, help="the model store bucket (ModelBucketName output)")
    parser.add_argument("--dataset", required=True, help="data set name under datasets/ in the bucket")
    parser.add_argument("--role-arn", required=True, help="execution role (TrainingRoleArn output)")
    parser.add_argument(
        "--region",
        default=default_region(environ),
        help="default: $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1",
    )
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument(
        "--image",
        default=None,
        help="training image URI in ECR (default: SageMaker's scikit-learn image). A private ECR image is "
        "refused unless --role-can-pull-image: the platform's training role has no ECR permissions",
    )
    parser.add_argument(
        "--role-can-pull-image",
        action="store_true",
        help="the execution role has ecr:GetAuthorizationToken, ecr:BatchGetImage and "
        "ecr:GetDownloadUrlForLayer for --image (checked with the role unless --skip-role-validation)",
    )
    parser.add_argument("--max-runtime-seconds", type=int, default=DEFAULT_MAX_RUNTIME_SECONDS)
    parser.add_argument(
        "--job-name-prefix",
        default=DEFAULT_JOB_NAME_PREFIX,
        help="the job is named PREFIX-<UTC time>-<random>; use <namePrefix>-train (e.g. edgeml-dev-train) "
        "so the environment's drift retraining can use the job as its template",
    )
    parser.add_argument(
        "--tag", dest="tags", action="append", type=parse_key_value, default=[], metavar="KEY=VALUE"
    )
    parser.add_argument(
        "--output-kms-key",
        default=environ.get(ENV_OUTPUT_KMS_KEY) or None,
        help=f"ARN of the KMS key for the job's output and its uploaded code, e.g. the ModelStoreKeyArn "
        f"output (default: ${ENV_OUTPUT_KMS_KEY}; unset: SageMaker's default S3 key). An alias or a bare "
        "key id is refused (exit 2): the role check needs the ARN. The role needs kms:Encrypt, "
        "kms:GenerateDataKey and kms:Decrypt on it",
    )
    parser.add_argument(
        "--volume-kms-key",
        default=environ.get(ENV_VOLUME_KMS_KEY) or None,
        help=f"ARN of the KMS key for the instances' storage volumes (default: ${ENV_VOLUME_KMS_KEY}; "
        "unset: SageMaker's default); an alias or a bare key id is refused (exit 2). Instance types with "
        "local NVMe storage refuse one. Drift retraining reuses it from its template job",
    )
    parser.add_argument(
        "--skip-role-validation",
        action="store_true",
        help="skip the check (iam:SimulatePrincipalPolicy) that the execution role may read this job's "
        "code and data and write its output; for stand-ins without that call, such as moto. The SDK's "
        "generic role check, which wants ECR, CloudWatch and EC2 permissions the platform's role does not "
        "have, never runs",
    )
    add_hyperparameter_option(parser)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.launch",
        description=(
            "Run training/train.py as a SageMaker training job (cloud) or in this process (local), "
            "with the same hyperparameters and SM_* paths. Prints one JSON object on stdout. "
            "Exit codes: 0 done (a cloud job was created: status ok, or created with a warning), "
            "1 the launch or the training failed, 2 invalid arguments or config, 3 an AWS call failed "
            "(status unknown: the job may exist, see training_job_name)."
        ),
        epilog="AWS_ENDPOINT_URL points every AWS call at a stand-in such as moto.",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="{cloud,local}")

    cloud = sub.add_parser(
        "cloud",
        help="create a SageMaker training job (returns at once)",
        description=(
            "Create a SageMaker training job that trains on s3://BUCKET/datasets/DATASET/, uploads "
            "its code to s3://BUCKET/code/ and writes to s3://BUCKET/training-output/<job>/."
        ),
    )
    add_cloud_options(cloud, environ)

    local = sub.add_parser(
        "local",
        help="run train.py in this process",
        description="Run train.py in this process with SM_CHANNEL_TRAIN=DATA_DIR and SM_MODEL_DIR=MODEL_DIR.",
    )
    local.add_argument(
        "--data-dir", type=Path, required=True, help="CSV file or directory (the train channel)"
    )
    local.add_argument("--model-dir", type=Path, required=True, help="where model.onnx is written")
    local.add_argument("--output-dir", type=Path, default=None, help="default: <model-dir>/../output")
    add_hyperparameter_option(local)
    return parser


def main(argv: Sequence[str] | None = None, *, boto_session: boto3.Session | None = None) -> int:
    configure_logging()
    args = build_parser(os.environ).parse_args(argv)
    try:
        result = run_parsed(args, boto_session=boto_session)
    except LaunchConfigError as exc:
        return _fail(EXIT_USAGE, exc)
    except JobStateUnknownError as exc:
        return _fail(EXIT_AWS, exc, status="unknown", training_job_name=exc.training_job_name)
    except LaunchError as exc:
        return _fail(EXIT_FAILED, exc)
    except AWS_ERRORS as exc:
        return _fail(EXIT_AWS, exc)
    sys.stdout.write(json.dumps({"status": "ok", "mode": args.mode, **result}) + "\n")
    return EXIT_OK


def run_parsed(args: argparse.Namespace, *, boto_session: boto3.Session | None = None) -> dict[str, object]:
    """Run parsed ``local`` (``args.mode == "local"``) or cloud options; the JSON-ready result.

    ``edgeml train local|sagemaker`` parses options with the same names and calls this, so the two
    command lines cannot drift apart. A cloud job that exists although something after its creation
    failed is a result (``status: created`` with a ``warning``), not an error: nobody should start it
    again.
    """
    hyperparameters = dict(args.hyperparameters)
    if args.mode == "local":
        cfg = LaunchConfig(hyperparameters=hyperparameters)
        model_path = run_local(
            cfg, data_dir=args.data_dir, model_dir=args.model_dir, output_dir=args.output_dir
        )
        return {"model_path": str(model_path)}
    cfg = LaunchConfig.for_model_store(
        bucket=args.bucket,
        dataset=args.dataset,
        role_arn=args.role_arn,
        region=args.region,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        training_image=args.image,
        image_pull_by_role=args.role_can_pull_image,
        max_runtime_seconds=args.max_runtime_seconds,
        job_name_prefix=args.job_name_prefix,
        tags=dict(args.tags),
        hyperparameters=hyperparameters,
        output_kms_key=args.output_kms_key,
        volume_kms_key=args.volume_kms_key,
    )
    described: dict[str, object] = {
        "region": cfg.region,
        "training_image": resolve_training_image(cfg),
        "train_s3_uri": cfg.train_s3_uri,
        "output_s3_uri": cfg.output_s3_uri,
    }
    try:
        name = launch_cloud(cfg, boto_session=boto_session, validate_role=not args.skip_role_validation)
    except JobCreatedError as exc:
        _log.warning("training job created with a warning", extra={"reason": str(exc)})
        return {
            "status": "created",
            "training_job_name": exc.training_job_name,
            **described,
            "warning": str(exc),
        }
    return {"status": "ok", "training_job_name": name, **described}


def _fail(exit_code: int, exc: Exception, *, status: str = "error", **fields: object) -> int:
    _log.error("launch failed", extra={"error": type(exc).__name__, "reason": str(exc), **fields})
    document = {"status": status, **fields, "error": type(exc).__name__, "message": str(exc)}
    sys.stdout.write(json.dumps(document) + "\n")
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
