"""One benchmark file through the real path: train on its first rows, then score it as the edge does.

``run_file`` is the protocol for one CSV: the leading ``train_rows`` rows are written to a temporary
directory and ``training.train.main`` (the SageMaker entry point) trains on them and exports
``model.onnx``; the edge component's own loader (``load_model``, ONNX Runtime) and scoring core
(``ScoringEngine``) then process every row of the file in order, as one stream, and the edge's online
post-processing (``Postprocessor``, parameters from the model's metadata) turns each raw score into a
score in ``[0, 1]``. Every score is causal: it depends on rows at or before its own only. Rows before the
first full window score 0.

A file whose training rows cannot train the detector (the trainer's own rule: too few rows for
``MIN_TRAINING_WINDOWS`` windows of the configured length, or no row left to score) gets the null
detector instead: every score 0, no decision, ``FileOutcome.untrained`` saying why, and one WARNING.
NAB needs a score for every file; its windows then count as misses. Any other failure still raises.

The evaluation harness is the one place that imports both training and edge code: it checks that what
training exports is what the device computes.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from greengrass_components.anomaly_detector.batch import Decision
from greengrass_components.anomaly_detector.messages import Sample
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.postprocess import PostprocessConfig, StreamPostprocessor
from greengrass_components.anomaly_detector.scoring import ScoringEngine
from training import train
from training.data import Series, leading_rows, load_csv
from training.detector import too_few_rows
from training.errors import TrainingError

# Large micro-batches: the scores do not depend on the batch size, the run time does.
EVAL_BATCH_SIZE: Final = 512
NAB_PROBATION_FRACTION: Final = 0.15
NAB_MAX_TRAIN_ROWS: Final = 750

_log = logging.getLogger("training.eval_pipeline")


class EvaluationError(TrainingError):
    """A benchmark file could not be run through the protocol."""


def nab_train_rows(n_rows: int) -> int:
    """NAB's probationary period: ``min(floor(0.15 * n), 750)`` rows."""
    return min(math.floor(NAB_PROBATION_FRACTION * n_rows), NAB_MAX_TRAIN_ROWS)


@dataclass(frozen=True)
class FileJob:
    """What one worker needs: the CSV, how many leading rows to train on, and train.py's arguments."""

    name: str  # relative path inside the corpus' data folder, e.g. realKnownCause/ambient_temperature.csv
    path: Path
    train_rows: int | None  # None: NAB's rule applied to the file's row count
    hyperparameters: tuple[str, ...]  # ``--name value`` pairs for training.train
    postprocess: PostprocessConfig | None = None  # overrides the model's own (tuning only)


@dataclass(frozen=True)
class FileOutcome:
    name: str
    timestamps: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]  # [n_rows, n_channels]
    channels: tuple[str, ...]
    train_rows: int
    window_length: int
    raw_scores: npt.NDArray[np.float64]  # [n_rows], 0 before the first full window
    scores: npt.NDArray[np.float64]  # [n_rows] in [0, 1]
    raw_threshold: float  # +inf for an untrained file: no raw score exceeds it
    raw_decisions: npt.NDArray[np.bool_]  # the deployed model's own calibrated threshold
    decisions: npt.NDArray[np.bool_]  # post-processed score >= the post-processing decision level
    postprocess: PostprocessConfig
    model_bytes: int  # 0 for an untrained file
    seconds: float
    # Why no model could be trained on the file (the trainer's words); None when one was. An untrained
    # file scores 0 on every row and makes no decision (the null detector).
    untrained: str | None = None


def run_file(job: FileJob) -> FileOutcome:
    """Train on the file's leading rows, then stream the whole file through the edge scoring path."""
    started = time.perf_counter()
    series = load_csv(job.path)
    n_rows = series.n_rows
    train_rows = nab_train_rows(n_rows) if job.train_rows is None else job.train_rows
    try:
        train_config = train.parse_args(list(job.hyperparameters), environ={})
    except TrainingError as exc:
        raise EvaluationError(f"{job.name}: invalid hyperparameters: {exc}") from exc
    reason = untrainable_reason(series, train_rows, train_config)
    if reason is not None:
        _log.warning(
            "too few rows to train and score: the file scores 0 throughout",
            extra={"file": job.name, "rows": n_rows, "train_rows": train_rows, "reason": reason},
        )
        return untrained_outcome(job, series, train_rows, train_config, reason=reason, started=started)
    with tempfile.TemporaryDirectory(prefix="edgeml-eval-") as tmp:
        train_dir = Path(tmp) / "train"
        model_dir = Path(tmp) / "model"
        train_dir.mkdir()
        _write_leading_rows(job.path, train_dir / job.path.name, train_rows)
        argv = [
            "--train",
            str(train_dir),
            "--model_dir",
            str(model_dir),
            "--model_version",
            "eval",
            *job.hyperparameters,
        ]
        previous = logging.root.manager.disable
        # train.main logs every step; across a corpus that drowns the per-file progress lines.
        logging.disable(logging.INFO)
        try:
            code = train.main(argv)
        finally:
            logging.disable(previous)
        if code != train.EXIT_OK:
            raise EvaluationError(f"{job.name}: training failed with exit code {code}")
        model_path = model_dir / train.MODEL_FILE
        model = load_model(model_path)
        model_bytes = model_path.stat().st_size

    meta = model.metadata
    if meta.channels != series.channels:
        raise EvaluationError(
            f"{job.name}: model channels {meta.channels} != file channels {series.channels}"
        )
    config = job.postprocess or PostprocessConfig.from_metadata(model.extra_metadata)
    decisions = stream_decisions(
        ScoringEngine(model, batch_size=EVAL_BATCH_SIZE), job.name, series.timestamps, series.values
    )
    first = meta.window_length - 1
    raw = np.zeros(n_rows)
    raw[first:] = [d.score for d in decisions]
    scores = np.zeros(n_rows)
    post = [d.post_score for d in decisions]
    if job.postprocess is None and all(p is not None for p in post):
        # The engine already applied the model's own post-processing, exactly as the device does.
        scores[first:] = post
    elif job.postprocess is None:
        # A model without edge_postprocess: the device decides `score > threshold` (DecisionRule), so the
        # evaluation reports exactly those decisions, as 0/1 scores.
        scores[first:] = raw[first:] > meta.threshold
    else:
        # A tuning override: post-process the raw scores here.
        scores[first:] = postprocess_scores(raw[first:], config, meta.threshold, series.values[first:])
    raw_decisions = raw > meta.threshold
    raw_decisions[:first] = False
    return FileOutcome(
        name=job.name,
        timestamps=series.timestamps,
        values=series.values,
        channels=series.channels,
        train_rows=train_rows,
        window_length=meta.window_length,
        raw_scores=raw,
        scores=scores,
        raw_threshold=meta.threshold,
        raw_decisions=raw_decisions,
        decisions=scores >= config.decision_level,
        postprocess=config,
        model_bytes=model_bytes,
        seconds=time.perf_counter() - started,
    )


def untrainable_reason(series: Series, train_rows: int, config: train.TrainConfig) -> str | None:
    """Why the file's leading ``train_rows`` rows cannot train the detector, or None when they can.

    The rule is the trainer's own: the rows train.py would fit on (its ``train_rows`` /
    ``train_fraction`` applied to the file's leading rows) must give at least ``MIN_TRAINING_WINDOWS``
    windows of the configured length. The reason is the trainer's own ``too_few_rows`` message.
    """
    n_rows = series.n_rows
    if not 0 < train_rows < n_rows:
        return (
            f"cannot train on {train_rows} of {n_rows} rows: the protocol needs at least one training row "
            "and one row after them"
        )
    rows = leading_rows(
        leading_rows(series, train_rows=train_rows, train_fraction=None),
        train_rows=config.train_rows,
        train_fraction=config.train_fraction,
    )
    return too_few_rows([rows.n_rows], config.detector_config())


def untrained_outcome(
    job: FileJob, series: Series, train_rows: int, config: train.TrainConfig, *, reason: str, started: float
) -> FileOutcome:
    """The null detector's outcome: every score 0, no decision (NAB counts the file's windows as misses)."""
    n_rows = series.n_rows
    return FileOutcome(
        name=job.name,
        timestamps=series.timestamps,
        values=series.values,
        channels=series.channels,
        train_rows=train_rows,
        window_length=config.window_length,
        raw_scores=np.zeros(n_rows),
        scores=np.zeros(n_rows),
        raw_threshold=math.inf,
        raw_decisions=np.zeros(n_rows, dtype=np.bool_),
        decisions=np.zeros(n_rows, dtype=np.bool_),
        postprocess=job.postprocess or PostprocessConfig(),
        model_bytes=0,
        seconds=time.perf_counter() - started,
        untrained=reason,
    )


def stream_decisions(
    engine: ScoringEngine,
    stream: str,
    timestamps: npt.NDArray[np.datetime64],
    values: npt.NDArray[np.float64],
) -> list[Decision]:
    """Feed every row as a sample, in order; decision i is the window ending at row ``i + window - 1``.

    Timestamps are made strictly increasing (a repeated or earlier one moves 1 ms after its predecessor):
    real NAB files step back an hour at daylight-saving changes, and the edge rightly refuses a sample
    that is not newer than the previous one; a gateway in front of it would re-stamp it the same way so
    that no reading is lost.
    """
    epoch = strictly_increasing(timestamps.astype("datetime64[us]").astype(np.int64) / 1e6)
    decisions = list(
        engine.process(
            Sample(stream=stream, timestamp=float(t), values=tuple(float(v) for v in row))
            for t, row in zip(epoch, values, strict=True)
        )
    )
    flushed = engine.flush()
    if flushed is not None:
        decisions.extend(flushed.decisions())
    first = engine.metadata.window_length - 1
    n_rows = values.shape[0]
    if len(decisions) != max(n_rows - first, 0):
        raise EvaluationError(f"{stream}: {len(decisions)} decisions for {n_rows} rows")
    return decisions


def strictly_increasing(epoch: npt.NDArray[np.float64], step: float = 1e-3) -> npt.NDArray[np.float64]:
    out = np.array(epoch, dtype=np.float64)
    for i in range(1, out.size):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + step
    return out


def postprocess_scores(
    raw: Sequence[float] | npt.NDArray[np.float64],
    config: PostprocessConfig,
    threshold: float,
    values: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """The edge's post-processing of one stream's raw scores, in order.

    ``values[i]`` is the newest sample of raw score ``i``'s window (what ``Decision.window[-1]`` holds
    on the device), for the value-based checks; None runs the raw-score path only.
    """
    state = StreamPostprocessor(config, threshold)
    if values is None:
        return np.array([state.update(float(r)) for r in raw], dtype=np.float64)
    if len(values) != len(raw):
        raise EvaluationError(f"{len(values)} value rows for {len(raw)} raw scores")
    rows = np.asarray(values, dtype=np.float64).tolist()
    return np.array([state.update(float(r), row) for r, row in zip(raw, rows, strict=True)], dtype=np.float64)


def _write_leading_rows(source: Path, target: Path, rows: int) -> None:
    """Header plus the first ``rows`` data rows, byte-for-byte (blank lines skipped, as the loader does)."""
    lines = [line for line in source.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    target.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
