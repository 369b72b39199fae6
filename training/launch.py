"""Start the training entry point as a SageMaker training job, or run it in-process with the same contract.

    python -m training.launch cloud --bucket B --dataset nab --role-arn arn:aws:iam::...:role/R
    python -m training.launch local --data-dir tests/training/data --model-dir build/model

Both paths run ``training/train.py`` with the job's hyperparameters as ``--name value`` arguments and
its paths in ``SM_MODEL_DIR`` / ``SM_CHANNEL_TRAIN`` / ``SM_OUTPUT_DATA_DIR``. The cloud path uses the
SageMaker SDK v3 ``ModelTrainer`` (one ``CreateTrainingJob`` request, no waiting); every AWS call goes
through the boto3 session passed in, so ``AWS_ENDPOINT_URL`` points it at moto.
"""

import argparse
import contextlib
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from training.errors import TrainingError
from training.launch_config import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_JOB_NAME_PREFIX,
    DEFAULT_MAX_RUNTIME_SECONDS,
    DEFAULT_REGION,
    HyperparameterValue,
    LaunchConfig,
    LaunchConfigError,
    LaunchError,
    LocalTrainingError,
)
from training.logs import configure_logging

# Python 3.12 variant of the scikit-learn 1.4-2 framework image: train.py needs Python >= 3.11
# (datetime.UTC) and the numpy 2.4 pin needs >= 3.11, which the plain 1.4-2 image (Python 3.10) lacks.
SKLEARN_FRAMEWORK_VERSION: Final = "1.4-2-py312"
MODEL_FILE: Final = "model.onnx"
REQUIREMENTS_FILE: Final = "requirements.txt"
TRAIN_CHANNEL: Final = "train"
ENV_MODEL_DIR: Final = "SM_MODEL_DIR"
ENV_CHANNEL_TRAIN: Final = "SM_CHANNEL_TRAIN"
ENV_OUTPUT_DATA_DIR: Final = "SM_OUTPUT_DATA_DIR"
ENV_OUTPUT_DIR: Final = "SM_OUTPUT_DIR"
# The SDK's documented switch for its client-side IAM role check (iam:SimulatePrincipalPolicy).
ENV_VALIDATE_ROLE: Final = "SAGEMAKER_VALIDATE_ROLE"
ENV_REGIONS: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")
# An explicit SDK config: telemetry off (it would call STS and a public S3 URL outside the injected
# endpoint), and no user-level config file silently adding defaults to the job.
SDK_CONFIG: Final[Mapping[str, object]] = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}
# Never shipped to the training container.
_STAGING_IGNORE: Final = ("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

_log = logging.getLogger("training.launch")


# ---------------------------------------------------------------------------------------------------
# Hyperparameters: the same strings reach train.py in the container and in-process.


def _serialize(value: object) -> str:
    # Mirrors the SDK: strings as-is, everything else JSON (ints, floats).
    return value if isinstance(value, str) else json.dumps(value)


def _deserialize(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def job_hyperparameters(hyperparameters: Mapping[str, HyperparameterValue]) -> dict[str, str]:
    """The ``HyperParameters`` of the ``CreateTrainingJob`` request (SageMaker stores strings)."""
    return {name: _serialize(value) for name, value in hyperparameters.items()}


def entry_point_args(hyperparameters: Mapping[str, HyperparameterValue]) -> list[str]:
    """The argv the SDK's container driver gives the entry script: ``--name value`` per hyperparameter.

    In the container, the driver JSON-decodes each stored string where it can and re-encodes it, so
    ``"1e-3"`` arrives as ``0.001``; this reproduces that round trip so a local run sees the same argv.
    """
    args: list[str] = []
    for name, text in job_hyperparameters(hyperparameters).items():
        args += [f"--{name}", _serialize(_deserialize(text))]
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


def check_hyperparameters(cfg: LaunchConfig, entry: EntryPoint) -> None:
    """Let the entry point's own parser judge the hyperparameters before any instance is paid for."""
    try:
        entry.parse_args(entry_point_args(cfg.hyperparameters))
    except TrainingError as exc:
        raise LaunchConfigError(f"the entry point rejects the hyperparameters: {exc}") from exc


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


def launch_cloud(
    cfg: LaunchConfig, *, boto_session: boto3.Session | None = None, validate_role: bool = True
) -> str:
    """Create the SageMaker training job (without waiting for it) and return its name.

    ``boto_session`` (a ``boto3.Session``) carries credentials, region and, via ``AWS_ENDPOINT_URL``,
    the endpoint of every call the SDK makes: the source upload to ``cfg.code_location()``, the
    ``CreateTrainingJob`` request and the ``DescribeTrainingJob`` that follows it. Pass
    ``validate_role=False`` where ``iam:SimulatePrincipalPolicy`` does not exist (moto).
    """
    cloud = cfg.require_cloud()
    entry = load_entry_point(cfg)
    check_hyperparameters(cfg, entry)
    image = resolve_training_image(cfg)
    code = cfg.code_location()

    # Imported here: the SDK takes seconds to import and only the cloud path needs it.
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError  # noqa: PLC0415
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
    from sagemaker.train.model_trainer import ModelTrainer  # noqa: PLC0415

    session = boto_session if boto_session is not None else boto3.Session(region_name=cfg.region)
    if session.region_name != cfg.region:
        raise LaunchConfigError(f"the boto3 session is in {session.region_name}, the config in {cfg.region}")
    sm_session = Session(
        boto_session=session,
        default_bucket=code.bucket,
        default_bucket_prefix=code.key.strip("/") or None,
        sagemaker_config=dict(SDK_CONFIG),
    )
    with tempfile.TemporaryDirectory(prefix="edgeml-launch-") as staging:
        entry_script = stage_source(cfg, Path(staging))
        try:
            with scoped_environ({} if validate_role else {ENV_VALIDATE_ROLE: "false"}):
                trainer = ModelTrainer(
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
                    compute=Compute(instance_type=cfg.instance_type, instance_count=cfg.instance_count),
                    stopping_condition=StoppingCondition(max_runtime_in_seconds=cfg.max_runtime_seconds),
                    output_data_config=OutputDataConfig(s3_output_path=cloud.output_s3_uri),
                    input_data_config=[InputData(channel_name=TRAIN_CHANNEL, data_source=cloud.train_s3_uri)],
                    hyperparameters=job_hyperparameters(cfg.hyperparameters),
                    # The entry script runs as a file (training/train.py), so its package's parent
                    # must be on the path for "import training.<module>" to resolve.
                    environment={"PYTHONPATH": SM_CODE_CONTAINER_PATH},
                    tags=[Tag(key=key, value=value) for key, value in cfg.tags.items()] or None,
                )
            trainer.train(wait=False, logs=False)
        except RoleValidationError as exc:
            raise LaunchError(f"the execution role cannot run training jobs: {exc}") from exc
        except ValueError as exc:  # the SDK's own validation (pydantic models, paths, role lookup)
            raise LaunchConfigError(f"the SageMaker SDK rejects the configuration: {exc}") from exc
    # The SDK keeps the created job here (its documented example reads it the same way).
    job = trainer._latest_training_job
    if job is None:
        raise LaunchError("the SageMaker SDK returned without creating a training job")
    name: str = job.training_job_name
    _log.info(
        "training job created",
        extra={
            "training_job_name": name,
            "region": cfg.region,
            "training_image": image,
            "train_s3_uri": cloud.train_s3_uri,
            "output_s3_uri": cloud.output_s3_uri,
            "code_s3_uri": str(code),
            "instance_type": cfg.instance_type,
            "instance_count": cfg.instance_count,
        },
    )
    return name


# ---------------------------------------------------------------------------------------------------
# Local


def run_local(cfg: LaunchConfig, *, data_dir: Path, model_dir: Path, output_dir: Path | None = None) -> Path:
    """Run the entry point in-process as SageMaker would run it; return the path of ``model.onnx``.

    ``data_dir`` plays the train channel, ``model_dir`` the model directory; ``output_dir`` (default: a
    sibling ``output`` of ``model_dir``) plays ``/opt/ml/output``, with output data in its ``data/``.
    The process environment is restored afterwards. Raises :class:`LocalTrainingError` on a non-zero
    exit, with the reason the entry point wrote to ``<output_dir>/failure``.
    """
    entry = load_entry_point(cfg)
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


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    region = default_region(environ)
    parser = argparse.ArgumentParser(
        prog="python -m training.launch",
        description=(
            "Run training/train.py as a SageMaker training job (cloud) or in this process (local), "
            "with the same hyperparameters and SM_* paths. Prints one JSON object on stdout. "
            "Exit codes: 0 done, 1 the launch or the training failed, 2 invalid arguments or config."
        ),
        epilog="AWS_ENDPOINT_URL points every AWS call at a stand-in such as moto.",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="{cloud,local}")

    def add_hyperparameters(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--hyperparameter",
            "-p",
            dest="hyperparameters",
            action="append",
            type=parse_key_value,
            default=[],
            metavar="NAME=VALUE",
            help="passed to train.py as --NAME VALUE (repeatable), e.g. -p window_length=32",
        )

    cloud = sub.add_parser(
        "cloud",
        help="create a SageMaker training job (returns at once)",
        description=(
            "Create a SageMaker training job that trains on s3://BUCKET/datasets/DATASET/, uploads "
            "its code to s3://BUCKET/code/ and writes to s3://BUCKET/training-output/<job>/."
        ),
    )
    cloud.add_argument("--bucket", required=True, help="the model store bucket")
    cloud.add_argument("--dataset", required=True, help="data set name under datasets/ in the bucket")
    cloud.add_argument("--role-arn", required=True, help="IAM execution role of the training job")
    cloud.add_argument("--region", default=region, help=f"default: $AWS_REGION or {DEFAULT_REGION}")
    cloud.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    cloud.add_argument("--instance-count", type=int, default=1)
    cloud.add_argument("--image", default=None, help="training image URI (default: the scikit-learn image)")
    cloud.add_argument("--max-runtime-seconds", type=int, default=DEFAULT_MAX_RUNTIME_SECONDS)
    cloud.add_argument("--job-name-prefix", default=DEFAULT_JOB_NAME_PREFIX)
    cloud.add_argument(
        "--tag", dest="tags", action="append", type=parse_key_value, default=[], metavar="KEY=VALUE"
    )
    cloud.add_argument(
        "--skip-role-validation",
        action="store_true",
        help="skip the SDK's iam:SimulatePrincipalPolicy check (moto does not implement it)",
    )
    add_hyperparameters(cloud)

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
    add_hyperparameters(local)
    return parser


def main(argv: Sequence[str] | None = None, *, boto_session: boto3.Session | None = None) -> int:
    configure_logging()
    args = build_parser(os.environ).parse_args(argv)
    try:
        result = run_parsed(args, boto_session=boto_session)
    except LaunchConfigError as exc:
        return _fail(EXIT_USAGE, exc)
    except (LaunchError, ClientError, BotoCoreError) as exc:
        return _fail(EXIT_FAILED, exc)
    sys.stdout.write(json.dumps({"status": "ok", "mode": args.mode, **result}) + "\n")
    return EXIT_OK


def run_parsed(args: argparse.Namespace, *, boto_session: boto3.Session | None = None) -> dict[str, object]:
    """Run parsed ``local`` (``args.mode == "local"``) or cloud options; the JSON-ready result.

    ``edgeml train local|sagemaker`` parses options with the same names and calls this, so the two
    command lines cannot drift apart.
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
        max_runtime_seconds=args.max_runtime_seconds,
        job_name_prefix=args.job_name_prefix,
        tags=dict(args.tags),
        hyperparameters=hyperparameters,
    )
    name = launch_cloud(cfg, boto_session=boto_session, validate_role=not args.skip_role_validation)
    return {
        "training_job_name": name,
        "region": cfg.region,
        "training_image": resolve_training_image(cfg),
        "train_s3_uri": cfg.train_s3_uri,
        "output_s3_uri": cfg.output_s3_uri,
    }


def _fail(exit_code: int, exc: Exception) -> int:
    _log.error("launch failed", extra={"error": type(exc).__name__, "reason": str(exc)})
    sys.stdout.write(json.dumps({"status": "error", "error": type(exc).__name__, "message": str(exc)}) + "\n")
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
