"""SageMaker script-mode entry point: train on every CSV of the ``train`` channel, write ``model.onnx``.

Run as ``python -m training.train --window_length 32 ...`` (SageMaker passes each hyperparameter as
``--name value``). Paths default to the SageMaker environment (``SM_MODEL_DIR``, ``SM_CHANNEL_TRAIN``,
``SM_OUTPUT_DATA_DIR``, ``SM_OUTPUT_DIR``), so the same command runs locally with flags or env vars.
Exit codes: 0 trained, 2 bad input or hyperparameters, 1 anything unexpected (a bug, a full disk). In
both failure cases the reason is logged and, under SageMaker, written to ``$SM_OUTPUT_DIR/failure`` so
that DescribeTrainingJob's FailureReason shows it: the SDK's driver writes its own, traceback-only
failure file only when that file does not exist yet.
"""

import argparse
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NoReturn

import numpy as np
import onnx

from training.calibrate import (
    Calibration,
    CalibrationRule,
    MadRule,
    QuantileRule,
    calibrate_threshold,
    score_summary,
)
from training.data import (
    Series,
    fingerprint,
    leading_rows,
    load_training_data,
    manifest,
    sliding_windows,
)
from training.detector import DetectorConfig, ForecastResidualModel, fit, score_windows
from training.errors import ConfigError, TrainingError
from training.export import ModelMetadata, build_onnx_model, format_utc, save_model
from training.logs import configure_logging
from training.seasonal import (
    SeasonalResolution,
    resolve_edge_postprocess,
    sampling_interval,
    validate_time_keys,
)

ENV_MODEL_DIR: Final = "SM_MODEL_DIR"
ENV_CHANNEL_TRAIN: Final = "SM_CHANNEL_TRAIN"
ENV_OUTPUT_DATA_DIR: Final = "SM_OUTPUT_DATA_DIR"
ENV_OUTPUT_DIR: Final = "SM_OUTPUT_DIR"
DEFAULT_MODEL_DIR: Final = "/opt/ml/model"
DEFAULT_CHANNEL_TRAIN: Final = "/opt/ml/input/data/train"
MODEL_FILE: Final = "model.onnx"
METRICS_FILE: Final = "metrics.json"
# Every training file's sha256 and name, sha256sum style: the full list the metrics only sample.
MANIFEST_FILE: Final = "training-files.sha256"
FAILURE_FILE: Final = "failure"
EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_BAD_INPUT: Final = 2
# training_metrics travels in the model's metadata and, whole, into one lineage registry item (DynamoDB:
# 400 KB). Its only part that grows with the data is the per-file list, so only the first files are
# listed; with names of at most 255 bytes that part stays under 10 KiB (tests: 3,000 files < 64 KiB).
MAX_LISTED_FILES: Final = 20
# SageMaker's FailureReason holds 1,024 characters; the rest of a longer reason is in the log.
MAX_FAILURE_CHARS: Final = 1000
# model_name and model_version become S3 key segments (models/<name>/<version>/model.onnx).
_KEY_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Hyperparameters the SageMaker SDK adds for its own use; they are not ours to interpret.
_SAGEMAKER_ARG_PREFIX: Final = "--sagemaker_"

_log = logging.getLogger("training.train")


@dataclass(frozen=True)
class TrainConfig:
    train_path: Path
    model_dir: Path
    output_data_dir: Path | None = None
    window_length: int = 32
    ridge_alpha: float = 1e-3
    mean_weight: float = 0.5
    threshold_rule: str = "quantile"
    threshold_quantile: float = 0.995
    threshold_margin: float = 1.5
    threshold_mad_k: float = 10.0
    model_name: str = "anomaly-detector"
    model_version: str | None = None
    train_rows: int | None = None
    train_fraction: float | None = None
    channels: tuple[str, ...] | None = None
    edge_postprocess: Mapping[str, object] | None = None
    jump_lengths: tuple[int, ...] = ()
    jump_weight: float = 0.0
    level_length: int = 8
    level_weight: float = 0.0
    level_horizon: float = 0.0

    def __post_init__(self) -> None:
        if self.train_rows is not None and self.train_fraction is not None:
            raise ConfigError("give train_rows or train_fraction, not both")
        if self.train_rows is not None and self.train_rows < 1:
            raise ConfigError(f"train_rows must be >= 1, got {self.train_rows}")
        if self.train_fraction is not None and not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.threshold_rule not in {"quantile", "mad"}:
            raise ConfigError(f"threshold_rule must be 'quantile' or 'mad', got {self.threshold_rule!r}")
        for label, value in (("model_name", self.model_name), ("model_version", self.model_version)):
            if value is not None and not _KEY_SEGMENT.fullmatch(value):
                raise ConfigError(f"{label} {value!r} must be 1-128 characters of A-Z a-z 0-9 . _ -")
        if self.channels is not None and (
            not self.channels or not all(self.channels) or len(set(self.channels)) != len(self.channels)
        ):
            raise ConfigError(f"channels must be distinct non-empty names, got {list(self.channels)}")
        # Building these validates their parameters now, before any data is read.
        self.detector_config()
        self.calibration_rule()
        if self.edge_postprocess is not None:
            validate_time_keys(self.edge_postprocess)

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            window_length=self.window_length,
            ridge_alpha=self.ridge_alpha,
            mean_weight=self.mean_weight,
            jump_lengths=self.jump_lengths,
            jump_weight=self.jump_weight,
            level_length=min(self.level_length, self.window_length),
            level_weight=self.level_weight,
            level_horizon=self.level_horizon,
        )

    def calibration_rule(self) -> CalibrationRule:
        if self.threshold_rule == "mad":
            return MadRule(k=self.threshold_mad_k)
        return QuantileRule(quantile=self.threshold_quantile, margin=self.threshold_margin)


class _Parser(argparse.ArgumentParser):
    """Raises ConfigError instead of exiting, so a bad hyperparameter is logged like any other bad input."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


@dataclass(frozen=True)
class TrainedModel:
    """Everything training produced, before anything is written."""

    detector: ForecastResidualModel
    calibration: Calibration
    metadata: ModelMetadata
    proto: onnx.ModelProto


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> TrainConfig:
    """Hyperparameters from ``argv`` (``--name value``, ``_`` or ``-`` spelling), paths from the env."""
    env = os.environ if environ is None else environ
    # No abbreviations: `--model_d` must not pass the unknown-hyperparameter check and move the model dir.
    parser = _Parser(
        prog="training.train",
        description="Train an anomaly detector and export model.onnx.",
        allow_abbrev=False,
    )

    def add(name: str, **kwargs: object) -> None:
        flags = {f"--{name}", f"--{name.replace('_', '-')}"}
        parser.add_argument(*sorted(flags), dest=name, **kwargs)  # type: ignore[arg-type]

    add("train", default=env.get(ENV_CHANNEL_TRAIN, DEFAULT_CHANNEL_TRAIN), help="CSV file or directory")
    add("model_dir", default=env.get(ENV_MODEL_DIR, DEFAULT_MODEL_DIR))
    add("output_data_dir", default=env.get(ENV_OUTPUT_DATA_DIR))
    add("window_length", type=int, default=32)
    add("ridge_alpha", type=float, default=1e-3)
    add("mean_weight", type=float, default=0.5)
    add("threshold_rule", choices=["quantile", "mad"], default="quantile")
    add("threshold_quantile", type=float, default=0.995)
    add("threshold_margin", type=float, default=1.5)
    add("threshold_mad_k", type=float, default=10.0)
    add("model_name", default="anomaly-detector")
    add("model_version", default=None, help="default: <UTC timestamp>-<first 8 hex of the data sha256>")
    add("train_rows", type=int, default=None, help="leading rows of each file to train on (default: all)")
    add("train_fraction", type=float, default=None, help="leading fraction of each file to train on")
    add("channels", default=None, help='comma-separated or JSON list, e.g. "value" or \'["a", "b"]\'')
    add("jump_lengths", default="", help='comma-separated shift lengths, e.g. "4,16" (default: none)')
    add("jump_weight", type=float, default=0.0)
    add("level_length", type=int, default=8)
    add("level_weight", type=float, default=0.0)
    add("level_horizon", type=float, default=0.0, help="rows of training drift the level scale allows for")
    add("edge_postprocess", default=None, help="JSON object: the edge's online score post-processing")

    args, unknown = parser.parse_known_args(list(argv) if argv is not None else None)
    foreign = [arg for arg in unknown if arg.startswith("--") and not arg.startswith(_SAGEMAKER_ARG_PREFIX)]
    if foreign:
        raise ConfigError(f"unknown hyperparameters: {foreign}")
    return TrainConfig(
        train_path=Path(args.train),
        model_dir=Path(args.model_dir),
        output_data_dir=Path(args.output_data_dir) if args.output_data_dir else None,
        window_length=args.window_length,
        ridge_alpha=args.ridge_alpha,
        mean_weight=args.mean_weight,
        threshold_rule=args.threshold_rule,
        threshold_quantile=args.threshold_quantile,
        threshold_margin=args.threshold_margin,
        threshold_mad_k=args.threshold_mad_k,
        model_name=args.model_name,
        model_version=args.model_version or None,
        train_rows=args.train_rows,
        train_fraction=args.train_fraction,
        channels=parse_channels(args.channels),
        edge_postprocess=parse_json_object(args.edge_postprocess, "edge_postprocess"),
        jump_lengths=parse_int_list(args.jump_lengths, "jump_lengths"),
        jump_weight=args.jump_weight,
        level_length=args.level_length,
        level_weight=args.level_weight,
        level_horizon=args.level_horizon,
    )


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"4,16"`` -> ``(4, 16)``; empty -> ``()``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return tuple(int(part) for part in parts)
    except ValueError as exc:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from exc


def parse_json_object(text: str | None, name: str) -> dict[str, object] | None:
    """A hyperparameter holding a JSON object (SageMaker passes every hyperparameter as a string)."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {text!r}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, got {text!r}")
    return value


def parse_channels(text: str | None) -> tuple[str, ...] | None:
    """``None`` / empty means "all numeric columns"; otherwise a JSON list or comma-separated names."""
    if text is None or not text.strip():
        return None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"channels is not a valid JSON list: {text!r}") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"channels must be a JSON list of strings, got {text!r}")
        return tuple(n.strip() for n in names)
    return tuple(name.strip() for name in text.split(","))


def default_model_version(now: datetime, data_sha256: str) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{data_sha256[:8]}"


def train(config: TrainConfig, series: Sequence[Series], *, now: datetime) -> TrainedModel:
    """Fit, calibrate and build the ONNX model from loaded series; writes nothing."""
    train_series = [
        leading_rows(s, train_rows=config.train_rows, train_fraction=config.train_fraction) for s in series
    ]
    channels = series[0].channels
    detector = fit([s.values for s in train_series], channels, config.detector_config())
    windows = np.concatenate([sliding_windows(s.values, config.window_length) for s in train_series])
    scores = score_windows(detector, windows)
    calibration = calibrate_threshold(scores, config.calibration_rule())
    data_sha256 = fingerprint(series)
    seasonal = resolve_postprocess(config.edge_postprocess, train_series)
    metrics = training_metrics(
        config,
        series=series,
        train_series=train_series,
        detector=detector,
        calibration=calibration,
        scores=scores,
        seasonal=seasonal,
    )
    metadata = ModelMetadata(
        window_length=config.window_length,
        channels=channels,
        threshold=calibration.threshold,
        model_version=config.model_version or default_model_version(now, data_sha256),
        model_name=config.model_name,
        training_data_sha256=data_sha256,
        training_metrics=metrics,
        detector=detector.name,
        created_at=now,
        edge_postprocess=None if seasonal is None else seasonal.edge_postprocess,
    )
    return TrainedModel(
        detector=detector,
        calibration=calibration,
        metadata=metadata,
        proto=build_onnx_model(detector, metadata),
    )


def resolve_postprocess(
    settings: Mapping[str, object] | None, train_series: Sequence[Series]
) -> SeasonalResolution | None:
    """The model's row-based ``edge_postprocess``: time-based seasonal keys resolved from the training rows'
    median sampling interval (training/seasonal.py); None when the hyperparameter is not given."""
    if settings is None:
        return None
    resolution = resolve_edge_postprocess(settings, sampling_interval([s.timestamps for s in train_series]))
    if resolution.status != "row-based":
        _log.info("edge_postprocess seasonal settings resolved", extra=resolution.as_dict())
    return resolution


def training_metrics(
    config: TrainConfig,
    *,
    series: Sequence[Series],
    train_series: Sequence[Series],
    detector: ForecastResidualModel,
    calibration: Calibration,
    scores: np.ndarray,
    seasonal: SeasonalResolution | None = None,
) -> dict[str, object]:
    """The ``training_metrics`` JSON object: data used, detector settings, score distribution, calibration
    (and, when ``edge_postprocess`` gave a period in seconds, how it was resolved to rows).

    Bounded in the number of files: totals over all files, details of the first ``MAX_LISTED_FILES``
    and ``files_truncated`` for the rest (all of them are in ``MANIFEST_FILE`` and behind
    ``training_data_sha256``)."""
    extra: dict[str, object] = {}
    if seasonal is not None and seasonal.status != "row-based":
        extra["edge_postprocess_seasonal"] = seasonal.as_dict()
    listed = list(zip(series, train_series, strict=True))[:MAX_LISTED_FILES]
    return {
        **extra,
        "n_files": len(series),
        "files": [
            {
                "name": full.source,
                "sha256": full.sha256,
                "rows": full.n_rows,
                "train_rows": used.n_rows,
                "missing_filled": full.n_missing_filled,
            }
            for full, used in listed
        ],
        "files_truncated": len(series) - len(listed),
        "n_rows": sum(s.n_rows for s in series),
        "n_missing_filled": sum(s.n_missing_filled for s in series),
        "n_train_rows": sum(s.n_rows for s in train_series),
        "n_windows": int(scores.size),
        "train_rows_limit": config.train_rows,
        "train_fraction": config.train_fraction,
        "detector": {
            "name": detector.name,
            "window_length": detector.window_length,
            "ridge_alpha": detector.ridge_alpha,
            "mean_weight": detector.mean_weight,
            "jump_lengths": list(detector.jump_lengths),
            "jump_weight": detector.jump_weight,
            "level_length": detector.level_length,
            "level_weight": detector.level_weight,
            "normalisation": "median/mad",
            "center": detector.center.tolist(),
            "scale": detector.scale.tolist(),
            "residual_scale": detector.residual_scale.tolist(),
            "deviation_scale": detector.deviation_scale.tolist(),
        },
        "score_quantiles": score_summary(scores),
        "calibration": calibration.as_dict(),
    }


def run(config: TrainConfig, *, now: datetime) -> TrainedModel:
    """Load, train and write ``model.onnx`` + ``metrics.json`` (also to the output data dir, if set)."""
    _log.info("loading training data", extra={"path": str(config.train_path), "channels": config.channels})
    series = load_training_data(config.train_path, config.channels)
    _log.info(
        "training data loaded",
        extra={
            # A log event holds 256 KB; thousands of names would not fit, and the manifest has them all.
            "n_files": len(series),
            "files": [s.source for s in series[:MAX_LISTED_FILES]],
            "rows": sum(s.n_rows for s in series),
            "channels": list(series[0].channels),
        },
    )
    trained = train(config, series, now=now)
    model_path = config.model_dir / MODEL_FILE
    model_sha256 = save_model(trained.proto, model_path)
    metrics = {
        "model_name": trained.metadata.model_name,
        "model_version": trained.metadata.model_version,
        "created_at": format_utc(now),
        "threshold": trained.calibration.threshold,
        "training_data_sha256": trained.metadata.training_data_sha256,
        "model_sha256": model_sha256,
        "training_metrics": trained.metadata.training_metrics,
    }
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    files = manifest(series)
    for directory in filter(None, (config.model_dir, config.output_data_dir)):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / METRICS_FILE).write_text(text)
        (directory / MANIFEST_FILE).write_text(files, encoding="utf-8")
    _log.info(
        "model written",
        extra={
            "model_path": str(model_path),
            "model_sha256": model_sha256,
            "model_version": trained.metadata.model_version,
            "threshold": trained.calibration.threshold,
            "n_windows": trained.calibration.n_scores,
            "train_fraction_over_threshold": trained.calibration.fraction_over_threshold,
        },
    )
    return trained


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    # Read apart from the config so that a failure to build the config is reported there too.
    failure_dir = _failure_dir(os.environ)
    try:
        config = parse_args(argv)
        run(config, now=datetime.now(UTC))
    except TrainingError as exc:
        _log.error("training failed", extra={"error": type(exc).__name__, "reason": str(exc)})
        write_failure(failure_dir, exc)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - the entry point's last resort; the reason must reach SageMaker
        # Not a failure we explain: a bug, or the machine (memory, disk). The traceback goes to the log;
        # the failure file still names the error, so FailureReason is never only the driver's traceback.
        _log.exception(
            "training failed unexpectedly", extra={"error": type(exc).__name__, "reason": str(exc)}
        )
        write_failure(failure_dir, exc, prefix="unexpected error: ")
        return EXIT_UNEXPECTED
    return EXIT_OK


def write_failure(directory: Path | None, exc: BaseException, *, prefix: str = "") -> None:
    """``<prefix><ErrorType>: <reason>`` into SageMaker's failure file, if there is one to write.

    Never raises: the reason is logged already, and a failure to write it (a full disk) must not hide
    the exit code.
    """
    if directory is None:
        return
    reason = f"{prefix}{type(exc).__name__}: {exc}"
    if len(reason) > MAX_FAILURE_CHARS:
        reason = reason[: MAX_FAILURE_CHARS - 3] + "..."
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / FAILURE_FILE).write_text(reason + "\n", encoding="utf-8")
    except OSError as write_error:
        _log.error(
            "could not write the failure file", extra={"path": str(directory), "error": str(write_error)}
        )


def _failure_dir(environ: Mapping[str, str]) -> Path | None:
    value = environ.get(ENV_OUTPUT_DIR)
    return Path(value) if value else None


if __name__ == "__main__":
    raise SystemExit(main())
