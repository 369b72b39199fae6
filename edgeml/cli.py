"""``edgeml`` (or ``python -m edgeml``): one command line for the platform's common jobs.

Each command delegates to the part that owns the work (see ``edgeml.jobs``); this module parses
arguments, points AWS clients at the chosen endpoints, maps failures to exit codes and prints results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, TextIO

import demo.run
import device.cli
from edgeml import jobs
from edgeml.device_policy import DevicePolicyRequest, create_device_policy
from edgeml.errors import RefusedError, UsageError
from edgeml.progress import PROGRESS_MODES
from greengrass_components.anomaly_detector.errors import ConfigError as DetectorConfigError
from greengrass_components.anomaly_detector.errors import ModelError, SourceError
from greengrass_components.publish import ComponentPublishError
from lambdas.lifecycle import cli as lifecycle_cli
from lambdas.lifecycle.config import ENV_FLEET_THING_GROUP_ARN
from lambdas.lifecycle.errors import ConfigError as LifecycleConfigError
from lambdas.lifecycle.errors import LifecycleError
from lambdas.lifecycle.errors import RefusedError as LifecycleRefusedError
from lambdas.publisher.adapters import S3ModelStore
from lambdas.publisher.config import ENV_MODEL_BUCKET
from lambdas.publisher.errors import (
    ArtifactConflictError,
    BadEventError,
    ModelNotFoundError,
    ModelValidationError,
    PublisherError,
)
from lambdas.publisher.errors import ConfigError as PublisherConfigError
from lambdas.publisher.handler import dependencies_from_environ
from training.errors import TrainingError
from training.launch import (
    AWS_ERRORS,
    add_cloud_options,
    add_hyperparameter_option,
    default_region,
    run_parsed,
    scoped_environ,
)
from training.launch_config import JobStateUnknownError, LaunchConfigError, LaunchError
from training.logs import JsonFormatter, configure_logging

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_AWS: Final = 3

ENV_ENDPOINT_URL: Final = "AWS_ENDPOINT_URL"
ENV_GREENGRASS_ENDPOINT_URL: Final = "AWS_ENDPOINT_URL_GREENGRASSV2"

EPILOG: Final = """\
exit codes:
  0  done
  1  refused or failed: the gate rejected a model, the canary is not healthy, nothing to roll back
     to, a model, component or device policy conflicts with what is stored, training or a device
     run failed
  2  usage or configuration: bad arguments, a missing environment variable, an unreadable file
  3  AWS error: a service call failed (credentials, permissions, throttling: run it again; after
     `train sagemaker` with status unknown, first check whether training_job_name exists)

output: results go to stdout (--json: one JSON document), logs and progress bars to stderr.

endpoints: every AWS client goes to real AWS unless --endpoint-url / --greengrass-endpoint-url (or
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_GREENGRASSV2) point it at stand-ins (moto, the Greengrass fake).
Lifecycle and publish settings come from the Lambdas' environment variables (docs/configuration.md).
"""

# Failures by exit code; earlier groups win (a LaunchConfigError is also a LaunchError).
_USAGE_ERRORS: Final = (
    UsageError,
    LaunchConfigError,
    TrainingError,
    PublisherConfigError,
    LifecycleConfigError,
    DetectorConfigError,
    SourceError,
)
_REFUSALS: Final = (
    RefusedError,
    LaunchError,
    ComponentPublishError,
    BadEventError,
    ModelNotFoundError,
    ModelValidationError,
    ArtifactConflictError,
    ModelError,
    LifecycleRefusedError,
)
# AWS_ERRORS includes boto3's S3 transfer errors (a refused code upload raises S3UploadFailedError).
_AWS_ERRORS: Final = (*AWS_ERRORS, PublisherError, LifecycleError)

_log = logging.getLogger("edgeml.cli")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and shows defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS, [], "") and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    region = default_region(environ)
    parser = argparse.ArgumentParser(
        prog="edgeml",
        description="Train, evaluate, publish, deploy, promote and roll back anomaly models; run a "
        "local device; replay a file; show the fleet.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document (also after a command)")
    parser.add_argument("--endpoint-url", help=f"sets {ENV_ENDPOINT_URL} (e.g. a moto server)")
    parser.add_argument(
        "--greengrass-endpoint-url", help=f"sets {ENV_GREENGRASS_ENDPOINT_URL} (e.g. our Greengrass fake)"
    )
    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="progress bars (auto: when stderr is a tty)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="INFO logs on stderr (default: warnings)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands, environ)
    _add_evaluate(commands)
    _add_publish(commands)
    _add_lifecycle(commands)
    _add_local(commands, region)
    return parser


_Commands = argparse._SubParsersAction


def _add(
    sub: _Commands[argparse.ArgumentParser], name: str, text: str, description: str
) -> argparse.ArgumentParser:
    # --json after the command too; SUPPRESS keeps the top-level value when it is not given there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    return sub.add_parser(
        name, help=text, description=description, epilog=EPILOG, formatter_class=_Formatter, parents=[common]
    )


def _add_train(commands: _Commands[argparse.ArgumentParser], environ: Mapping[str, str]) -> None:
    train = _add(commands, "train", "train a model locally or as a SageMaker job", "Train a model.")
    train_modes = train.add_subparsers(dest="mode", required=True, metavar="MODE")
    local = _add(
        train_modes, "local", "run training/train.py in this process",
        "Run training/train.py in this process with SM_CHANNEL_TRAIN=DATA_DIR, SM_MODEL_DIR=MODEL_DIR.",
    )  # fmt: skip
    local.add_argument("--data-dir", type=Path, required=True, help="CSV file or folder (the train channel)")
    local.add_argument("--model-dir", type=Path, required=True, help="where model.onnx is written")
    local.add_argument("--output-dir", type=Path, help="default: MODEL_DIR/../output")
    add_hyperparameter_option(local)
    cloud = _add(
        train_modes, "sagemaker", "create a SageMaker training job (returns at once)",
        "Create a SageMaker training job on s3://BUCKET/datasets/DATASET/ that writes its model under "
        "s3://BUCKET/training-output/; the publisher Lambda picks the model up when the job completes. "
        "Output status: ok; created (the job exists, something after its creation failed: see warning); "
        "unknown (exit 3: CreateTrainingJob got no answer, the job may exist: check training_job_name "
        "before launching again).",
    )  # fmt: skip
    # training.launch's own options: run_parsed runs them exactly as its CLI does.
    add_cloud_options(cloud, environ)


def _add_evaluate(commands: _Commands[argparse.ArgumentParser]) -> None:
    evaluate = _add(
        commands, "evaluate", "score a NAB- or SKAB-format corpus end to end",
        "Train on each file's leading rows and score the whole file with the edge's scoring core "
        "(training.evaluate); writes OUT/summary.json and per-file result CSVs.",
    )  # fmt: skip
    evaluate.add_argument("benchmark", choices=["nab", "skab"])
    evaluate.add_argument("--corpus", type=Path, required=True, help="corpus root (with data/)")
    evaluate.add_argument("--out", type=Path, required=True, help="results folder")
    evaluate.add_argument("--workers", type=int, default=2, help="processes")
    evaluate.add_argument(
        "--hp", action="append", default=[], metavar="NAME=VALUE", help="override a hyperparameter"
    )


def _add_publish(commands: _Commands[argparse.ArgumentParser]) -> None:
    publish = _add(commands, "publish", "upload a model or publish the inference component", "Publish.")
    publish_kinds = publish.add_subparsers(dest="kind", required=True, metavar="KIND")
    pub_model = _add(
        publish_kinds, "model", "validate a model.onnx and upload it to the model store",
        "Validate MODEL_FILE against the model contract and write it once to "
        "s3://BUCKET/models/NAME/<its model_version>/model.onnx, NAME being its model_name metadata. In a "
        "deployed stack the upload makes the publisher Lambda gate it and deploy it to the canary group; "
        "`edgeml deploy` does that here.",
    )  # fmt: skip
    pub_model.add_argument("model_file", type=Path, metavar="MODEL_FILE")
    pub_model.add_argument(
        "--model-name",
        help="NAME in the key (default: the model's model_name metadata, which training writes; "
        f"{jobs.DEFAULT_MODEL_NAME} for a model without it). A name that contradicts the metadata is "
        "refused (exit 2): the publisher would refuse the key",
    )
    pub_model.add_argument("--bucket", help=f"model store bucket (default: ${ENV_MODEL_BUCKET})")
    pub_comp = _add(
        publish_kinds, "component", "build and register the inference component's code",
        "Build the anomaly_detector archive, upload it once to s3://BUCKET/components/<name>/VERSION/ "
        "and create that Greengrass component version (greengrass_components/publish.py).",
    )  # fmt: skip
    pub_comp.add_argument("--version", required=True, help="component version (semver)")
    pub_comp.add_argument("--bucket", help=f"model store bucket (default: ${ENV_MODEL_BUCKET})")
    pub_comp.add_argument("--component-dir", type=Path, default=jobs.COMPONENT_DIR)
    pub_comp.add_argument("--build-dir", type=Path, default=Path("build/components"))

    # deploy
    deploy = _add(
        commands, "deploy", "publish a model and deploy it to the canary group",
        "Run the publisher Lambda's core in this process on a model: validate, gate (with LINEAGE_TABLE "
        "set), create the model component version and deploy it to the canary group (else to "
        "TARGET_THING_GROUP_ARN). Give MODEL_FILE to upload it first, or --model-uri for a stored model.",
    )  # fmt: skip
    source = deploy.add_mutually_exclusive_group(required=True)
    source.add_argument("model_file", type=Path, nargs="?", metavar="MODEL_FILE")
    source.add_argument("--model-uri", help="s3://BUCKET/KEY of a model already in the store")
    deploy.add_argument(
        "--model-name", help="with MODEL_FILE: as for `publish model` (default: the model's model_name)"
    )


def _add_lifecycle(commands: _Commands[argparse.ArgumentParser]) -> None:
    promote = _add(
        commands, "promote", "deploy the canary's model to the fleet if the canary is healthy",
        "Check the canary group's health and, if healthy, deploy its model to the fleet group.",
    )  # fmt: skip
    promote.add_argument("--model-version", help="refuse unless the canary runs this model")
    promote.add_argument("--dry-run", action="store_true", help="check the canary's health only")
    rollback = _add(
        commands, "rollback", "redeploy an earlier model to a whole group",
        "Redeploy the previous (or a given) model component version to a thing group.",
    )  # fmt: skip
    rollback.add_argument("--group", required=True, help="canary, fleet, a thing-group name or ARN")
    rollback.add_argument("--to-version", help="model component version (default: the previous one)")
    rollback.add_argument(
        "--from-model-version",
        help="the model to roll back away from (refused if the group runs another; repeating is a no-op)",
    )
    rollback.add_argument("--reason", default="", help="recorded with the deployment")
    fleet = _add(
        commands, "fleet", "what runs where: models per group, device or model version",
        "Without options: the canary's and the fleet's models. --group/--thing: component, model and "
        "training job per device. --model-version: that model's lineage (training job to deployments).",
    )  # fmt: skip
    which = fleet.add_mutually_exclusive_group()
    which.add_argument("--group", help="canary, fleet, a thing-group name or ARN")
    which.add_argument("--thing", help="one core device's thing name")
    which.add_argument("--model-version", help="one model's lineage")


def _add_local(commands: _Commands[argparse.ArgumentParser], region: str) -> None:
    dev = _add(
        commands, "device", "a core device's IoT policy; a local simulated core device",
        "Core devices: create one's IoT policy, or run a simulated one locally.",
    )  # fmt: skip
    dev_actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = _add(
        dev_actions, "run", "run one device until it is stopped or its components end",
        "Run one simulated core device (python -m device) against the Greengrass fake: it fetches its "
        "deployments, runs the components as processes and reports their states.",
    )  # fmt: skip
    run.add_argument("--thing-name", required=True)
    run.add_argument("--root", type=Path, required=True, help="the device's root folder (created)")
    run.add_argument("--region", default=region)
    run.add_argument("--interpolate-component-configuration", action="store_true")
    run.add_argument("--reuse-python", help="interpreter that already has the components' dependencies")
    run.add_argument("--poll-s", type=float, default=1.0, help="how often component states are checked")
    run.add_argument(
        "--deployment-poll-s",
        type=float,
        default=5.0,
        help="how often new deployments are looked for (0: run the first deployment only)",
    )
    policy = _add(
        dev_actions, "policy", "create a core device's own IoT policy (before installing it)",
        "Create the IoT policy NAME_PREFIX-core-device-THING_NAME for one Greengrass core device: it may "
        "connect only as that thing (client IDs THING_NAME, THING_NAME#2 ...), publish only its telemetry "
        "and hear only its acks, jobs and shadow, take the Fleet stack's role alias and make the nucleus's "
        "Greengrass calls (infra/device_policy.py). Give its name to the Greengrass installer as "
        "--thing-policy-name. Account and partition are the credentials' (sts get-caller-identity); "
        f"{ENV_FLEET_THING_GROUP_ARN}, when set, must be in the same account and region. Output status: "
        "created; unchanged (the policy exists and grants the same); updated (with --update). A policy of "
        "that name that grants otherwise is reported and left alone (exit 1) unless --update.",
    )  # fmt: skip
    policy.add_argument("--thing-name", required=True, help="the core device's thing name (not yet created)")
    policy.add_argument(
        "--name-prefix", required=True, help="the environment's namePrefix in cdk.json, e.g. edgeml-dev"
    )
    policy.add_argument(
        "--role-alias",
        help="token-exchange role alias (default: NAME_PREFIX-token-exchange, the Fleet stack's "
        "RoleAliasName output)",
    )
    policy.add_argument("--region", default=region, help="where the thing and the Fleet stack are")
    policy.add_argument(
        "--update",
        action="store_true",
        help="make the rendered document the policy's new default version when it differs (at IoT "
        "Core's limit of five versions, the oldest non-default one is deleted first)",
    )
    replay = _add(
        commands, "replay", "score a CSV file with a model, as the device does",
        "Replay FILE through the edge component (anomaly_detector: file source, in-memory transport) and "
        "print its run summary: samples, windows, anomaly events and their timestamps.",
    )  # fmt: skip
    replay.add_argument("file", type=Path, metavar="FILE")
    replay.add_argument("--model", type=Path, required=True, help="model.onnx")
    replay.add_argument("--model-sha256", help="refuse the model unless its sha256 matches")
    replay.add_argument("--stream", help="stream name (default: the file name without extension)")
    replay.add_argument("--thing-name", default="local")
    replay.add_argument("--speed", type=float, default=0.0, help="x real time by timestamps; 0: no pacing")
    demo_parser = _add(
        commands, "demo", "the whole loop on local stand-ins (= make demo)",
        "Start moto, mosquitto and the Greengrass fake; train, publish, deploy to simulated devices, replay "
        "NAB data and write a report. Arguments after `--` go to python -m demo.",
    )  # fmt: skip
    demo_parser.add_argument("demo_args", nargs=argparse.REMAINDER, metavar="-- ARGS")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    stdout = out if out is not None else sys.stdout
    args = build_parser(os.environ).parse_args(argv)  # exits 2 on usage errors, 0 on --help
    level = logging.INFO if args.verbose else logging.WARNING
    _configure_logging(level)
    endpoints = {
        name: value
        for name, value in (
            (ENV_ENDPOINT_URL, args.endpoint_url),
            (ENV_GREENGRASS_ENDPOINT_URL, args.greengrass_endpoint_url),
        )
        if value
    }
    with scoped_environ(endpoints):
        try:
            return _dispatch(args, stdout, level)
        except _USAGE_ERRORS as exc:
            return _fail(EXIT_USAGE, "usage or configuration error", exc)
        except JobStateUnknownError as exc:
            # Not a plain failure: the job may exist, so its name goes to stdout like a result.
            _emit(stdout, args.json, {"status": "unknown", "training_job_name": exc.training_job_name})
            return _fail(EXIT_AWS, "AWS error", exc)
        except _REFUSALS as exc:
            return _fail(EXIT_FAILED, "refused", exc)
        except _AWS_ERRORS as exc:
            return _fail(EXIT_AWS, "AWS error", exc)


def _configure_logging(level: int) -> None:
    for logger in (configure_logging(level), _edgeml_logger()):
        for handler in logger.handlers:
            handler.setLevel(level)


def _edgeml_logger() -> logging.Logger:
    # The training package's JSON formatter on the CLI's own logger too: one log format on stderr.
    # Replaced on every run, so the handler writes to the current sys.stderr.
    logger = logging.getLogger("edgeml")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def _fail(code: int, what: str, exc: Exception) -> int:
    # Expected failures: one clear line (the message says what is wrong), no traceback.
    _log.error(what, extra={"error": type(exc).__name__, "reason": str(exc), "exit_code": code})
    sys.stderr.write(f"edgeml: {what}: {exc}\n")
    return code


def _emit(stdout: TextIO, as_json: bool, document: Mapping[str, object], text: str | None = None) -> None:
    if as_json:
        stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    else:
        stdout.write((text if text is not None else render_text(document)) + "\n")


def render_text(document: Mapping[str, object], indent: str = "") -> str:
    """``key: value`` lines, nested mappings indented (``--json`` is the machine-readable form)."""
    lines: list[str] = []
    for key, value in document.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines.append(render_text(value, indent + "  "))
        elif value not in (None, "", [], {}):
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(line for line in lines if line)


def _bucket(given: str | None) -> str:
    bucket = given or os.environ.get(ENV_MODEL_BUCKET, "").strip()
    if not bucket:
        raise UsageError(f"give --bucket or set {ENV_MODEL_BUCKET}")
    return bucket


def _dispatch(args: argparse.Namespace, stdout: TextIO, level: int) -> int:
    command: str = args.command
    if command in {"promote", "rollback", "fleet"}:
        return lifecycle_cli.main(_lifecycle_argv(args), environ=os.environ, out=stdout)
    if command == "device" and args.action == "run":
        return _device(args)
    if command == "demo":
        extra = args.demo_args[1:] if args.demo_args[:1] == ["--"] else args.demo_args
        return EXIT_OK if demo.run.main(extra) == 0 else EXIT_FAILED
    text: str | None = None
    if command == "train":
        # The train options are training.launch's: it runs them exactly as its own CLI does.
        document = run_parsed(args)
    elif command == "evaluate":
        document, text = jobs.evaluate(
            args.benchmark,
            corpus=args.corpus,
            out=args.out,
            workers=args.workers,
            overrides=args.hp,
            progress=args.progress,
        )
    elif command == "publish" and args.kind == "model":
        document = jobs.publish_model_file(
            args.model_file,
            model_name=args.model_name,
            bucket=_bucket(args.bucket),
            store=S3ModelStore(),
        )
    elif command == "publish":
        document = jobs.publish_code_component(
            bucket=_bucket(args.bucket),
            version=args.version,
            component_dir=args.component_dir,
            build_dir=args.build_dir,
        )
    elif command == "device":  # policy
        request = DevicePolicyRequest(
            thing_name=args.thing_name,
            name_prefix=args.name_prefix,
            region=args.region,
            role_alias=args.role_alias,
            update=args.update,
        )
        document = create_device_policy(request, environ=os.environ)
    elif command == "deploy":
        parts = dependencies_from_environ(os.environ)
        uri = args.model_uri
        if uri is None:
            uploaded = jobs.publish_model_file(
                args.model_file,
                model_name=args.model_name,
                bucket=parts.config.model_bucket,
                store=parts.store,
            )
            uri = str(uploaded["model_uri"])
        document = jobs.deploy(uri, parts)
    else:  # replay
        document = jobs.replay(
            args.file,
            model=args.model,
            stream=args.stream or args.file.stem,
            thing_name=args.thing_name,
            speed=args.speed,
            model_sha256=args.model_sha256,
            log_level=logging.getLevelName(level),
            progress=args.progress,
        )
    _emit(stdout, args.json, document, text)
    return EXIT_OK


def _lifecycle_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--json"] if args.json else []
    if args.command == "promote":
        argv += ["promote", *(["--model-version", args.model_version] if args.model_version else [])]
        return argv + (["--dry-run"] if args.dry_run else [])
    if args.command == "rollback":
        argv += ["rollback", "--group", args.group, "--reason", args.reason]
        argv += ["--from-model-version", args.from_model_version] if args.from_model_version else []
        return argv + (["--to-version", args.to_version] if args.to_version else [])
    if args.group or args.thing:
        target = ["--group", args.group] if args.group else ["--thing", args.thing]
        return [*argv, "what-runs-where", *target]
    return [*argv, "status", *(["--model-version", args.model_version] if args.model_version else [])]


def _device(args: argparse.Namespace) -> int:
    greengrass = os.environ.get(ENV_GREENGRASS_ENDPOINT_URL)
    if not greengrass:
        raise UsageError(
            "a local device needs the Greengrass fake: give --greengrass-endpoint-url or set "
            f"{ENV_GREENGRASS_ENDPOINT_URL}"
        )
    argv = ["--thing-name", args.thing_name, "--root", str(args.root), "--greengrass-endpoint", greengrass]
    argv += ["--region", args.region, "--poll-s", repr(args.poll_s)]
    argv += ["--deployment-poll-s", repr(args.deployment_poll_s)]
    if os.environ.get(ENV_ENDPOINT_URL):
        argv += ["--s3-endpoint", os.environ[ENV_ENDPOINT_URL]]
    if args.interpolate_component_configuration:
        argv.append("--interpolate-component-configuration")
    if args.reuse_python:
        argv += ["--reuse-python", args.reuse_python]
    # device.cli exits 3 for a failed deployment or an errored component: a failure, not an AWS error.
    return EXIT_OK if device.cli.main(argv) == device.cli.EXIT_OK else EXIT_FAILED
