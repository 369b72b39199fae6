"""Retraining on a drift alarm: one SageMaker training job per alarm episode, at most one per cooldown.

The request is the one ``training/launch.py`` sends through the SageMaker SDK (``CreateTrainingJob``),
built here without the SDK: same image and entry (the SDK's ``sm_drivers`` bootstrap), same channels
(``train`` from the model store's ``datasets/<dataset>/``, ``code`` and ``sm_drivers``), same output
path, stopping condition and ``PYTHONPATH``. A Lambda cannot stage and upload the source package as the
SDK does, so the ``code`` and ``sm_drivers`` channels, and the image they were built for, come from the
newest *completed* training job of this environment (a launcher run, or an earlier retraining that
reused one): the code that last trained successfully. Its hyperparameters are reused too, except
``model_version`` (a retraining must get a new version) and ``model_name`` (from the configuration), and
so are its storage volume key (``ResourceConfig.VolumeKmsKeyId``, the launcher's ``--volume-kms-key``)
and its tags (``--tag``, read with ``ListTags``): a retrained job runs under the same key and is billed
and owned like the job it clones.
``tests/lambdas/retrain/test_launcher_parity.py`` compares the request with the launcher's, field by field.

The environment's jobs are exactly ``<prefix>-train-<SDK timestamp>`` (the launcher, run with
``--job-name-prefix <prefix>-train``) and ``<prefix>-drift-<date>-<time>`` (this function): not every
name that merely starts with ``<prefix>-``, because environment name prefixes may nest (``edgeml`` and
``edgeml-staging``) and another environment's job must never count for the cooldown or serve as the
template. A template whose code is not under this environment's own ``s3://<bucket>/code/`` is refused
(the training role could not read it anyway, and it would be another environment's code).

Idempotency: the job name derives from the alarm's state-change time, so a redelivered message, or the
two drift alarms entering ALARM in the same second, name the same job, and SageMaker refuses a second
job of that name. Cooldown: no job if any job of this environment was created in the last N hours.
Up to two requests run at once (``infra/parts/retrain.py``); two *different* alarm episodes handled in
the same few seconds can both pass the cooldown check, so at most two jobs can start together.
Pure: the SageMaker calls sit behind ``TrainingJobs``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from lambdas.retrain.config import RetrainConfig
from lambdas.retrain.errors import BadRequestError, ForeignTemplateError, NoTemplateJobError

ALARM_DETAIL_TYPE: Final = "CloudWatch Alarm State Change"
ALARM_STATE: Final = "ALARM"
JOB_NAME_INFIX: Final = "drift"
# The launcher's jobs: --job-name-prefix <prefix>-train, to which the SDK appends -%Y%m%d%H%M%S. One more
# alphanumeric segment is allowed after it (a uniqueness suffix), never more: a second segment could be
# the rest of another environment's job name.
LAUNCHER_INFIX: Final = "train"
_LAUNCHER_SUFFIX: Final = rf"{LAUNCHER_INFIX}-\d{{14}}(?:-[A-Za-z0-9]+)?"
_RETRAIN_SUFFIX: Final = rf"{JOB_NAME_INFIX}-\d{{8}}-\d{{6}}"
# What training/launch.py sends (TRAIN_CHANNEL, launch_config's prefixes, the SDK's code layout).
TRAIN_CHANNEL: Final = "train"
CODE_CHANNEL: Final = "code"
DRIVERS_CHANNEL: Final = "sm_drivers"
DATASETS_PREFIX: Final = "datasets"
CODE_PREFIX: Final = "code"
TRAINING_OUTPUT_PREFIX: Final = "training-output"
CODE_CONTAINER_PATH: Final = "/opt/ml/input/data/code"
INSTANCE_COUNT: Final = 1
VOLUME_SIZE_GB: Final = 30  # the SDK's default
# Set per run by training; a retraining must not reuse the template's.
NOT_INHERITED: Final = frozenset({"model_version", "model_name"})
# Tags AWS sets itself; CreateTrainingJob refuses them in a request.
RESERVED_TAG_PREFIX: Final = "aws:"


@dataclass(frozen=True)
class AlarmEvent:
    """The EventBridge "CloudWatch Alarm State Change" event the drift rule put on the queue."""

    alarm_name: str
    state: str
    state_changed_at: datetime  # timezone-aware UTC
    reason: str


@dataclass(frozen=True)
class TemplateJob:
    """What a retraining takes from an earlier, completed job: the code package and its image."""

    name: str
    training_image: str
    container_entrypoint: tuple[str, ...]
    container_arguments: tuple[str, ...]
    code_uri: str
    drivers_uri: str
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    volume_kms_key: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    instance_type: str | None = None


@dataclass(frozen=True)
class JobSummary:
    name: str
    created_at: datetime
    status: str


class TrainingJobs(Protocol):
    def exists(self, name: str) -> bool: ...

    def created_since(self, prefix: str, since: datetime) -> list[JobSummary]:
        """This environment's jobs (``is_environment_job``) created at or after ``since``, newest first."""
        ...

    def newest_completed(self, prefix: str) -> TemplateJob | None:
        """The newest completed job of this environment with code and sm_drivers channels, and its tags."""
        ...

    def create(self, request: Mapping[str, Any]) -> bool:
        """Create the job; False when a job of that name already exists."""
        ...


class Outcome(StrEnum):
    STARTED = "started"
    DUPLICATE = "duplicate"  # this alarm episode's job exists already
    COOLDOWN = "cooldown"  # another job started less than the cooldown ago


@dataclass(frozen=True)
class RetrainResult:
    outcome: Outcome
    job_name: str
    blocking_job: str | None = None
    template_job: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"outcome": str(self.outcome)}


def parse_alarm_event(body: str) -> AlarmEvent:
    """The SQS message body: an alarm state change into ALARM, or ``BadRequestError`` saying what is off."""
    try:
        event = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"message body is not JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(event, Mapping):
        raise BadRequestError("message body must be a JSON object (an EventBridge event)")
    if event.get("detail-type") != ALARM_DETAIL_TYPE:
        raise BadRequestError(f"expected detail-type {ALARM_DETAIL_TYPE!r}, got {event.get('detail-type')!r}")
    detail = event.get("detail")
    state = detail.get("state") if isinstance(detail, Mapping) else None
    if not isinstance(detail, Mapping) or not isinstance(state, Mapping):
        raise BadRequestError("event has no detail.state object")
    if state.get("value") != ALARM_STATE:
        raise BadRequestError(f"expected detail.state.value {ALARM_STATE!r}, got {state.get('value')!r}")
    alarm_name = detail.get("alarmName")
    if not isinstance(alarm_name, str) or not alarm_name:
        raise BadRequestError("event has no detail.alarmName")
    return AlarmEvent(
        alarm_name=alarm_name,
        state=ALARM_STATE,
        state_changed_at=_alarm_time(state.get("timestamp")),
        reason=str(state.get("reason", "")),
    )


def _alarm_time(value: object) -> datetime:
    # CloudWatch writes e.g. 2026-11-24T20:40:00.123+0000; fromisoformat reads that form since 3.11.
    if not isinstance(value, str):
        raise BadRequestError(f"detail.state.timestamp must be a string, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"detail.state.timestamp {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise BadRequestError(f"detail.state.timestamp {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def is_environment_job(prefix: str, name: str) -> bool:
    """Whether ``name`` is a job of the environment whose name prefix is ``prefix`` (module docstring).

    Exact, not ``startswith(prefix + "-")``: with environments ``edgeml`` and ``edgeml-staging``,
    ``edgeml-staging-train-20261125120000`` is the second's job only, since ``staging-train-...`` is
    neither ``train-<timestamp>`` nor ``drift-<date>-<time>``.
    """
    pattern = rf"{re.escape(prefix)}-(?:{_LAUNCHER_SUFFIX}|{_RETRAIN_SUFFIX})"
    return re.fullmatch(pattern, name) is not None


def job_name(prefix: str, alarm: AlarmEvent) -> str:
    """``<prefix>-drift-YYYYmmdd-HHMMSS`` of the state change: at most 24 + 22 characters (limit 63)."""
    return f"{prefix}-{JOB_NAME_INFIX}-{alarm.state_changed_at:%Y%m%d-%H%M%S}"


def training_job_request(config: RetrainConfig, template: TemplateJob, name: str) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request, shaped as training/launch.py's (see the module docstring)."""
    hyperparameters = {k: v for k, v in template.hyperparameters.items() if k not in NOT_INHERITED}
    hyperparameters["model_name"] = config.model_name

    def channel(channel_name: str, uri: str) -> dict[str, Any]:
        return {
            "ChannelName": channel_name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }

    bucket = config.model_store_bucket
    resources: dict[str, Any] = {
        "InstanceType": config.instance_type,
        "InstanceCount": INSTANCE_COUNT,
        "VolumeSizeInGB": VOLUME_SIZE_GB,
    }
    # Only with the instance type it ran on: SageMaker refuses a volume key on types with local NVMe
    # storage (e.g. ml.g4dn.*, ml.m5d.*), and a retraining on another type must not fail for it.
    if template.volume_kms_key is not None and template.instance_type == config.instance_type:
        # Without it the volumes would fall back to SageMaker's default key, and an SCP that requires
        # sagemaker:VolumeKmsKey would refuse the job the template passed.
        resources["VolumeKmsKeyId"] = template.volume_kms_key
    output: dict[str, Any] = {
        "S3OutputPath": f"s3://{bucket}/{TRAINING_OUTPUT_PREFIX}/",
        "CompressionType": "GZIP",
    }
    if config.kms_key_arn is not None:
        # The model store's key, not SageMaker's default (the account's aws/s3 key): model artifacts
        # stay under the key that guards the rest of the store. The training role may Encrypt with it.
        output["KmsKeyId"] = config.kms_key_arn
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "HyperParameters": hyperparameters,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "TrainingImage": template.training_image,
            "ContainerEntrypoint": list(template.container_entrypoint),
            "ContainerArguments": list(template.container_arguments),
        },
        "RoleArn": config.training_role_arn,
        "InputDataConfig": [
            channel(TRAIN_CHANNEL, f"s3://{bucket}/{DATASETS_PREFIX}/{config.dataset}/"),
            channel(CODE_CHANNEL, template.code_uri),
            channel(DRIVERS_CHANNEL, template.drivers_uri),
        ],
        "OutputDataConfig": output,
        "ResourceConfig": resources,
        "StoppingCondition": {"MaxRuntimeInSeconds": config.max_runtime_s},
        # train.py imports its siblings as training.<module> from the code channel.
        "Environment": {"PYTHONPATH": CODE_CONTAINER_PATH},
    }
    if template.tags:
        # As the launcher sends them (the SDK leaves Tags out when there are none).
        request["Tags"] = [{"Key": key, "Value": value} for key, value in template.tags.items()]
    return request


def template_from_description(description: Mapping[str, Any]) -> TemplateJob | None:
    """A ``DescribeTrainingJob`` response as a template (without tags: ``with_tags``), or None if it
    lacks the SDK's code channels."""
    channels = {
        c.get("ChannelName"): c.get("DataSource", {}).get("S3DataSource", {}).get("S3Uri")
        for c in description.get("InputDataConfig", [])
    }
    spec = description.get("AlgorithmSpecification", {})
    code, drivers, image = (
        channels.get(CODE_CHANNEL),
        channels.get(DRIVERS_CHANNEL),
        spec.get("TrainingImage"),
    )
    if not (isinstance(code, str) and isinstance(drivers, str) and isinstance(image, str)):
        return None
    return TemplateJob(
        name=str(description["TrainingJobName"]),
        training_image=image,
        container_entrypoint=tuple(spec.get("ContainerEntrypoint", [])),
        container_arguments=tuple(spec.get("ContainerArguments", [])),
        code_uri=code,
        drivers_uri=drivers,
        hyperparameters={str(k): str(v) for k, v in description.get("HyperParameters", {}).items()},
        volume_kms_key=description.get("ResourceConfig", {}).get("VolumeKmsKeyId") or None,
        instance_type=description.get("ResourceConfig", {}).get("InstanceType") or None,
    )


def with_tags(template: TemplateJob, tags: Iterable[Mapping[str, str]]) -> TemplateJob:
    """The template with its job's ``ListTags`` entries, less AWS's own (``aws:``): no request sets those."""
    return replace(
        template,
        tags={
            tag["Key"]: tag["Value"] for tag in tags if not tag["Key"].lower().startswith(RESERVED_TAG_PREFIX)
        },
    )


def check_template(config: RetrainConfig, template: TemplateJob) -> None:
    """``ForeignTemplateError`` unless the template's code and drivers are in this environment's code prefix.

    Cloning a request whose code lives in another bucket would run another environment's code, or fail
    in the job when the training role (which reads only ``<bucket>/code/*``) cannot download it.
    """
    own = f"s3://{config.model_store_bucket}/{CODE_PREFIX}/"
    for channel_name, uri in ((CODE_CHANNEL, template.code_uri), (DRIVERS_CHANNEL, template.drivers_uri)):
        if not uri.startswith(own):
            raise ForeignTemplateError(
                f"template job {template.name} has its {channel_name} channel at {uri}, outside this "
                f"environment's {own}; refusing to clone it. Launch a job of this environment with "
                f"python -m training.launch cloud --bucket {config.model_store_bucket} ..."
            )


def retrain(alarm: AlarmEvent, *, config: RetrainConfig, jobs: TrainingJobs, now: datetime) -> RetrainResult:
    name = job_name(config.job_name_prefix, alarm)
    # Before the cooldown check: a redelivery of this episode must say "duplicate", not "cooldown".
    if jobs.exists(name):
        return RetrainResult(Outcome.DUPLICATE, name)
    recent = jobs.created_since(config.job_name_prefix, now - timedelta(hours=config.cooldown_hours))
    if recent:
        return RetrainResult(Outcome.COOLDOWN, name, blocking_job=recent[0].name)
    template = jobs.newest_completed(config.job_name_prefix)
    if template is None:
        raise NoTemplateJobError(
            f"no completed training job named {config.job_name_prefix}-{LAUNCHER_INFIX}-<timestamp> or "
            f"{config.job_name_prefix}-{JOB_NAME_INFIX}-* to take the training code and image from; launch "
            f"one first: python -m training.launch cloud --job-name-prefix "
            f"{config.job_name_prefix}-{LAUNCHER_INFIX} ..."
        )
    check_template(config, template)
    if not jobs.create(training_job_request(config, template, name)):
        return RetrainResult(Outcome.DUPLICATE, name, template_job=template.name)
    return RetrainResult(Outcome.STARTED, name, template_job=template.name)
