"""The jobs behind the ``edgeml`` commands: thin calls into the parts that own the work.

Nothing here re-implements a part: training goes through ``training.launch`` (``edgeml.cli`` calls it
directly), evaluation through ``training.evaluate``, model publishing through the publisher Lambda's
own wiring and cores (``lambdas.publisher.handler``), component publishing through
``greengrass_components.publish``, and replay through the edge component's own runtime
(``anomaly_detector.app.build_runtime``). Each job returns a JSON-ready dict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import boto3

from edgeml.errors import RefusedError, UsageError
from edgeml.progress import ProgressMode, file_bar, polled_bar
from greengrass_components.anomaly_detector.app import build_runtime
from greengrass_components.anomaly_detector.config import parse_config
from greengrass_components.anomaly_detector.logs import configure_logging as configure_component_logging
from greengrass_components.publish import publish_component
from lambdas.lifecycle.core import PublishOutcome
from lambdas.publisher.config import DEFAULT_MAX_MODEL_BYTES
from lambdas.publisher.core import ModelStore
from lambdas.publisher.errors import ArtifactConflictError, ModelValidationError
from lambdas.publisher.events import S3_OBJECT_CREATED, S3_SOURCE, is_plain_segment, model_key, parse_event
from lambdas.publisher.handler import Dependencies, publish_request
from lambdas.publisher.validation import ModelInfo, validate_model
from training.evaluate import (
    NAB_HYPERPARAMETERS,
    SKAB_HYPERPARAMETERS,
    evaluate_nab,
    evaluate_skab,
    format_nab,
    format_skab,
    hyperparameter_argv,
)

# training.train's default model_name: the name of a model file without model_name metadata.
DEFAULT_MODEL_NAME: Final = "anomaly-detector"
COMPONENT_DIR: Final = Path(__file__).resolve().parents[1] / "greengrass_components" / "anomaly_detector"
EVALUATE_LOGGER: Final = "training.evaluate"


# --- evaluate --------------------------------------------------------------------------------------


def evaluate(
    benchmark: str, *, corpus: Path, out: Path, workers: int, overrides: Sequence[str], progress: ProgressMode
) -> tuple[dict[str, object], str]:
    """The corpus summary (also written to ``out/summary.json``) and its one-paragraph text form."""
    runners: dict[str, tuple[Mapping[str, str], Callable[..., dict[str, object]], Callable[..., str]]] = {
        "nab": (NAB_HYPERPARAMETERS, evaluate_nab, format_nab),
        "skab": (SKAB_HYPERPARAMETERS, evaluate_skab, format_skab),
    }
    defaults, run, render = runners[benchmark]
    hyperparameters = hyperparameter_argv(defaults, overrides)
    out.mkdir(parents=True, exist_ok=True)
    with file_bar(progress, logger=EVALUATE_LOGGER, desc=f"evaluate {benchmark}"):
        summary = run(corpus, out, hyperparameters=hyperparameters, workers=workers)
    return summary, render(summary)


# --- publish and deploy ----------------------------------------------------------------------------


def publish_model_file(
    path: Path,
    *,
    model_name: str | None = None,
    bucket: str,
    store: ModelStore,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> dict[str, object]:
    """Validate a local ``model.onnx`` and write it once to ``models/<name>/<model_version>/model.onnx``.

    The model's own metadata names its version, and its name when it has ``model_name`` (training writes
    it), so the key and the model cannot disagree: a ``model_name`` argument that contradicts the
    metadata is a ``UsageError``, as the publisher would refuse the key. A model without that metadata
    is named ``model_name``, or ``DEFAULT_MODEL_NAME``. An existing key with the same bytes is success
    (re-runs are safe); with other bytes it is refused.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    info = validate_model(data, max_bytes=max_bytes)
    name = model_file_name(path, info, model_name)
    key = model_key(name, info.model_version)
    created = store.put_if_absent(bucket, key, data)
    if not created and store.read(bucket, key, max_bytes=max_bytes) != data:
        raise ArtifactConflictError(
            f"s3://{bucket}/{key} already holds a different model; model versions must be unique"
        )
    return {
        "model_uri": f"s3://{bucket}/{key}",
        "model_version": info.model_version,
        "model_sha256": info.sha256,
        "created": created,
    }


def model_file_name(path: Path, info: ModelInfo, given: str | None) -> str:
    """The name to publish ``path`` under: its ``model_name`` metadata, which ``given`` may only repeat."""
    declared = info.model_name
    if declared is None:
        return given if given is not None else DEFAULT_MODEL_NAME
    if not is_plain_segment(declared):
        raise ModelValidationError(
            f"model {path} declares model_name {declared!r}, which cannot be an S3 key segment "
            "(1-128 letters, digits, '.', '_' or '-')"
        )
    if given is not None and given != declared:
        raise UsageError(
            f"model {path} declares model_name {declared!r}, but --model-name is {given!r}; the publisher "
            f"would refuse it under that name. Leave --model-name out (or give {declared!r}), or train the "
            "model with -p model_name=<name>"
        )
    return declared


def publish_code_component(
    *, bucket: str, version: str, component_dir: Path, build_dir: Path, s3: Any = None, greengrass: Any = None
) -> dict[str, object]:
    """Build, upload once and register the inference component's code (``greengrass_components.publish``)."""
    published = publish_component(
        s3=s3 if s3 is not None else boto3.client("s3"),
        greengrass=greengrass if greengrass is not None else boto3.client("greengrassv2"),
        bucket=bucket,
        component_dir=component_dir,
        version=version,
        build_dir=build_dir,
    )
    return {
        "component_name": published.name,
        "component_version": published.version,
        "component_arn": published.arn,
        "artifact_uri": published.artifact_uri,
        "artifact_sha256": published.artifact_sha256,
        "created": published.created,
    }


def object_created_event(uri: str) -> dict[str, object]:
    """The EventBridge ``Object Created`` event S3 sends for ``uri`` (what triggers the Lambda)."""
    bucket, sep, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not sep or not bucket or not key:
        raise UsageError(f"expected s3://BUCKET/KEY, got {uri!r}")
    return {
        "version": "0",
        "source": S3_SOURCE,
        "detail-type": S3_OBJECT_CREATED,
        "detail": {"bucket": {"name": bucket}, "object": {"key": key}},
    }


def deploy(uri: str, parts: Dependencies) -> dict[str, object]:
    """Publish the model at ``uri`` as the publisher Lambda would on its upload event.

    With the lifecycle configured: the gate, a deployment to the canary group and the lineage record
    (a gate rejection raises :class:`RefusedError`). Without it: a deployment to the target group.
    """
    results: list[dict[str, object]] = []
    for request in parse_event(object_created_event(uri), model_bucket=parts.config.model_bucket):
        outcome = publish_request(request, parts)
        if not isinstance(outcome, PublishOutcome):
            results.append({"outcome": "published", "publish": outcome.to_dict()})
            continue
        if outcome.outcome == "rejected":
            raise RefusedError(
                f"the gate rejected model {outcome.model.model_version}: {outcome.model.reason}"
            )
        results.append(outcome.to_dict())
    (only,) = results  # one URI, one request
    return only


# --- replay ----------------------------------------------------------------------------------------


def count_rows(path: Path) -> int | None:
    """Data rows of a CSV (non-blank lines after the header), for the progress bar; None if unreadable."""
    try:
        with path.open("rb") as handle:
            return max(sum(1 for line in handle if line.strip()) - 1, 0)
    except OSError:
        return None  # the component's own source reports the error


def replay(
    path: Path,
    *,
    model: Path,
    stream: str,
    thing_name: str,
    speed: float,
    model_sha256: str | None,
    log_level: str,
    progress: ProgressMode,
) -> dict[str, object]:
    """Score a CSV with the edge component's runtime (file source, in-memory transport); its run summary."""
    argv = [
        "--thing-name", thing_name,
        "--model", str(model),
        "--source", "file",
        "--file", str(path),
        "--stream", stream,
        "--speed", repr(speed),
        "--transport", "memory",
        "--health-interval-s", "0",
        "--log-level", log_level,
    ]  # fmt: skip
    if model_sha256 is not None:
        argv += ["--model-sha256", model_sha256]
    configure_component_logging(log_level)
    config = parse_config(argv, env=dict(os.environ))
    with build_runtime(config) as runtime:
        app = runtime.app
        with polled_bar(
            progress, total=count_rows(path), unit="row", desc="replay", read=lambda: app.stats.samples_in
        ):
            stats = app.run()
        summary: dict[str, object] = stats.summary(app.elapsed_s())
    return {"file": str(path), "stream": stream, "thing_name": thing_name, **summary}
