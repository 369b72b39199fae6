"""Benchmark the whole platform path on NAB- or SKAB-format corpora.

    python -m training.evaluate nab  --corpus DIR --out RESULTS [--workers 2] [--hp name=value ...]
    python -m training.evaluate skab --corpus DIR --out RESULTS [--workers 2] [--hp name=value ...]

Every CSV under ``DIR/data`` goes through ``training.eval_pipeline.run_file``: train.py on its leading rows
(NAB: the probationary period, ``min(floor(0.15 N), 750)`` rows; SKAB: 400 rows), then the edge's ONNX
scoring core and online post-processing over the whole file as one stream. ``RESULTS/<category>/<file>.csv``
gets one row per input row; ``RESULTS/summary.json`` the scores. The corpus scores are printed. A file
too short to train on scores 0 throughout (its windows are misses), still counts in the corpus scores,
and is listed under ``untrained`` in the summary and in one printed line.

One hyperparameter set per corpus family (``NAB_HYPERPARAMETERS``, ``SKAB_HYPERPARAMETERS``), chosen on the
shared corpora as docs/detection.md describes, never per file; ``--hp`` overrides one for experiments.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import numpy as np

from training.errors import TrainingError
from training.eval_pipeline import FileJob, FileOutcome, run_file
from training.logs import configure_logging
from training.nab_scorer import (
    CorpusReport,
    CostProfile,
    DetectionSeries,
    DetectionSummary,
    NabScoringError,
    ResultSeries,
    UndefinedScoreError,
    Window,
    fixed_threshold_report,
    fixed_threshold_summary,
    load_profiles,
    load_windows,
    score_corpus,
)
from training.seasonal import SamplingInterval, resolve_edge_postprocess
from training.skab_metrics import SKAB_TRAIN_ROWS, BinaryMetrics, corpus_binary_metrics

EXIT_OK: Final = 0
EXIT_BAD_INPUT: Final = 2
DEFAULT_WORKERS: Final = 2
SKAB_LABEL: Final = "anomaly"

# Chosen on the shared NAB corpus (docs/detection.md); one set for every file. The seasonal check is
# given in time (training resolves it to rows from the training rows' median sampling interval,
# training/seasonal.py), so an hourly or 30-minute stream also compares with the same time a day ago.
NAB_POSTPROCESS_BY_TIME: Final[Mapping[str, object]] = {
    "method": "likelihood",
    "short_window": 10,
    "long_window": 1000,
    # The likelihood's history grows to half the rows seen (capped): a long stream's rare, recurring
    # bursts stay in the reference instead of surprising it again every 1,000 rows.
    "long_fraction": 0.5,
    "long_window_max": 8000,
    "warmup": 100,
    "log_scores": False,
    "min_std": 0.1,
    "half_log10": 5.0,
    "suppress_level": 0.5,
    "suppress_rows": 400,
    "suppress_factor": 0.0,
    # Neutral on the shared corpus (ratios 2-10 score the same): a far larger anomaly right after a minor
    # alarm must not be silenced by that alarm's damping.
    "suppress_rearm_ratio": 3.0,
    # Checks on the stream's values: HTM's spatial range check and a seasonal (one day) difference
    # likelihood, against a two-day reference spread, averaged over a quarter of a day.
    "spatial_tolerance": 0.05,
    # A level not seen for a while: the 100-row mean outside the range of the 8,000 rows before it.
    "record_window": 100,
    "record_history": 8000,
    "record_min_history": 1000,
    "seasonal_period_s": 86400,
    "reference_periods": 2,
    "value_short_fraction": 0.25,
}
NAB_SAMPLING_S: Final = 300.0
# What the device gets on NAB's 5-minute rows (seasonal_lag 288, reference_window 576,
# value_short_window 72): the row-based form, for code that builds the edge's config directly.
NAB_POSTPROCESS: Final[Mapping[str, object]] = resolve_edge_postprocess(
    NAB_POSTPROCESS_BY_TIME, SamplingInterval(median_s=NAB_SAMPLING_S, regular_share=1.0, n_intervals=1)
).edge_postprocess
NAB_HYPERPARAMETERS: Final[Mapping[str, str]] = {
    "window_length": "32",
    "edge_postprocess": json.dumps(NAB_POSTPROCESS_BY_TIME),
}
# Chosen on the shared SKAB corpus (docs/detection.md).
SKAB_POSTPROCESS: Final[Mapping[str, object]] = {
    "method": "ratio",
    "short_window": 18,
    "warmup": 0,
    "log_scores": False,
    "hold_rows": 18,
}
SKAB_HYPERPARAMETERS: Final[Mapping[str, str]] = {
    "window_length": "32",
    "threshold_margin": "2.15",
    "edge_postprocess": json.dumps(SKAB_POSTPROCESS),
}

# The two fixed decisions reported beside the swept scores: the deployed model's own raw threshold, and
# the post-processed score's fixed decision level (summary key, FileOutcome attribute).
FIXED_DECISIONS: Final = (("raw_threshold", "raw_decisions"), ("postprocessed", "decisions"))

_log = logging.getLogger("training.evaluate")


def hyperparameter_argv(defaults: Mapping[str, str], overrides: Sequence[str]) -> tuple[str, ...]:
    """``--name value`` pairs for train.py: the corpus defaults with ``name=value`` overrides applied."""
    merged = dict(defaults)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise TrainingError(f"--hp expects name=value, got {item!r}")
        merged[name] = value
    argv: list[str] = []
    for name, value in merged.items():
        argv += [f"--{name}", value]
    return tuple(argv)


def corpus_files(corpus: Path) -> list[tuple[str, Path]]:
    """``(category/file.csv, path)`` for every CSV under ``corpus/data``, sorted."""
    data = corpus / "data"
    if not data.is_dir():
        raise TrainingError(f"{corpus} has no data/ folder")
    # os.walk, not Path.rglob: a corpus assembled from symlinked category folders is walked too
    # (rglob does not follow directory links before Python 3.13, and skipped them silently).
    files = sorted(
        Path(root) / name
        for root, _dirs, names in os.walk(data, followlinks=True)
        for name in names
        if name.endswith(".csv") and (Path(root) / name).is_file()
    )
    if not files:
        raise TrainingError(f"no CSV file under {data}")
    return [(p.relative_to(data).as_posix(), p) for p in files]


def run_jobs(jobs: Sequence[FileJob], workers: int) -> dict[str, FileOutcome]:
    """Run the files (in a process pool when ``workers > 1``), logging one progress line per file."""
    outcomes: dict[str, FileOutcome] = {}

    def done(index: int, outcome: FileOutcome) -> None:
        outcomes[outcome.name] = outcome
        _log.info(
            f"[{index}/{len(jobs)}] {outcome.name}",
            extra={
                "rows": int(outcome.scores.size),
                "train_rows": outcome.train_rows,
                "seconds": round(outcome.seconds, 2),
            },
        )

    if workers <= 1:
        for index, job in enumerate(jobs, start=1):
            done(index, run_file(job))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for index, outcome in enumerate(pool.map(run_file, jobs), start=1):
                done(index, outcome)
    return outcomes


# ---------------------------------------------------------------------------------------------
# NAB


def evaluate_nab(
    corpus: Path, out: Path, *, hyperparameters: tuple[str, ...], workers: int
) -> dict[str, object]:
    files = corpus_files(corpus)
    windows = load_windows(corpus / "labels" / "combined_windows.json")
    profiles = load_profiles(corpus / "config" / "profiles.json")
    unlabelled = [name for name, _ in files if name not in windows]
    if unlabelled:
        _log.warning(
            "files without a windows entry are scored as having no anomaly", extra={"files": unlabelled}
        )
    present = {name for name, _ in files}
    absent = sorted(name for name, spans in windows.items() if spans and name not in present)
    if absent:
        # Scored over the files present; NAB's own runner would count these windows as misses.
        _log.warning(
            "labelled files not found under data/ are left out of the scores",
            extra={"files": absent, "windows": sum(len(windows[name]) for name in absent)},
        )
    jobs = [
        FileJob(name=name, path=path, train_rows=None, hyperparameters=hyperparameters)
        for name, path in files
    ]
    outcomes = run_jobs(jobs, workers)
    for outcome in outcomes.values():
        write_result_csv(out / outcome.name, outcome, label_rows=None)
    summary = nab_summary(outcomes, {name: windows.get(name, []) for name, _ in files}, profiles)
    summary["hyperparameters"] = list(hyperparameters)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return summary


def nab_summary(
    outcomes: Mapping[str, FileOutcome],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
) -> dict[str, object]:
    """NAB scores (threshold-swept, per profile), per category, and the fixed-threshold decisions."""
    results = {name: ResultSeries(o.timestamps, o.scores) for name, o in outcomes.items()}
    try:
        report = score_corpus(results, windows, profiles)
    except UndefinedScoreError:
        return _summary_without_windows(outcomes, windows, profiles)
    by_category: dict[str, object] = {}
    for category, names in _categories(outcomes).items():
        by_category[category] = _category_scores(
            {n: results[n] for n in names}, {n: windows[n] for n in names}, profiles, report
        )
    fixed: dict[str, object] = {}
    for label, attribute in FIXED_DECISIONS:
        fixed_report = fixed_threshold_report(_decision_series(outcomes, attribute), windows, profiles)
        fixed[label] = {
            "nab": {p: r.normalized_score for p, r in fixed_report.profiles.items()},
            **_summary_dict(fixed_report.summary),
        }
    return {
        "scores": {p: r.normalized_score for p, r in report.profiles.items()},
        # null: detecting nothing scored best (the sweep's threshold is then +inf, which JSON cannot hold).
        "thresholds": {
            p: r.threshold if r.threshold is not None and math.isfinite(r.threshold) else None
            for p, r in report.profiles.items()
        },
        "per_category": by_category,
        "fixed_threshold": fixed,
        **_totals(outcomes),
    }


def _summary_without_windows(
    outcomes: Mapping[str, FileOutcome],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
) -> dict[str, object]:
    """A corpus with no labelled window in its scored rows (e.g. only normal series): the NAB scores are
    undefined (null), and what is left to report is the false alarms of the fixed decisions."""
    fixed: dict[str, object] = {}
    for label, attribute in FIXED_DECISIONS:
        summary = fixed_threshold_summary(_decision_series(outcomes, attribute), windows, profiles)
        fixed[label] = {"nab": dict.fromkeys(profiles), **_summary_dict(summary)}
    return {
        "scores": dict.fromkeys(profiles),
        "thresholds": dict.fromkeys(profiles),
        "per_category": {category: {"scores": None} for category in _categories(outcomes)},
        "fixed_threshold": fixed,
        **_totals(outcomes),
    }


def _totals(outcomes: Mapping[str, FileOutcome]) -> dict[str, object]:
    return {
        "files": len(outcomes),
        "untrained": untrained_files(outcomes),
        "rows": int(sum(o.scores.size for o in outcomes.values())),
        "max_model_bytes": max(o.model_bytes for o in outcomes.values()),
        "seconds": round(sum(o.seconds for o in outcomes.values()), 1),
    }


def _decision_series(outcomes: Mapping[str, FileOutcome], attribute: str) -> dict[str, DetectionSeries]:
    return {name: DetectionSeries(o.timestamps, getattr(o, attribute)) for name, o in outcomes.items()}


def untrained_files(outcomes: Mapping[str, FileOutcome]) -> dict[str, str]:
    """``{file: reason}`` for the files no model could be trained on (scored 0 throughout)."""
    return {name: o.untrained for name, o in sorted(outcomes.items()) if o.untrained is not None}


def format_untrained(summary: Mapping[str, object]) -> list[str]:
    """One line naming the files scored 0 throughout, or nothing when every file was trained."""
    untrained = _as_dict(summary.get("untrained", {}))
    if not untrained:
        return []
    names = ", ".join(untrained)
    return [f"files scored 0 throughout (too few rows to train and score): {len(untrained)} ({names})"]


def _categories(outcomes: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in sorted(outcomes):
        groups.setdefault(name.split("/")[0] if "/" in name else ".", []).append(name)
    return groups


def _category_scores(
    results: Mapping[str, ResultSeries],
    windows: Mapping[str, Sequence[Window]],
    profiles: Mapping[str, CostProfile],
    corpus_report: CorpusReport,
) -> dict[str, object]:
    """A category's own threshold-swept scores, and its counts at the corpus-wide thresholds."""
    entry: dict[str, object] = {}
    try:
        own = score_corpus(results, windows, profiles)
        entry["scores"] = {p: r.normalized_score for p, r in own.profiles.items()}
    except NabScoringError:
        entry["scores"] = None  # no anomaly window: the normalised score is undefined
    at_corpus = {}
    for profile, result in corpus_report.profiles.items():
        files = {n: f for n, f in result.files.items() if n in results}
        at_corpus[profile] = {
            "raw": sum(f.score for f in files.values()),
            "tp": sum(f.tp for f in files.values()),
            "fn": sum(f.fn for f in files.values()),
            "fp": sum(f.fp for f in files.values()),
        }
    entry["at_corpus_threshold"] = at_corpus
    return entry


def _summary_dict(summary: DetectionSummary) -> dict[str, object]:
    return asdict(summary)


def format_nab(summary: Mapping[str, object]) -> str:
    scores = _as_dict(summary["scores"])
    lines = [f"NAB {name}: {_fmt_score(value)}" for name, value in scores.items()]
    for label, entry in _as_dict(summary["fixed_threshold"]).items():
        nab = _as_dict(entry["nab"])
        lines.append(
            f"fixed threshold ({label}): precision={_fmt(entry['precision'])} recall={_fmt(entry['recall'])} "
            f"windows hit={entry['windows_hit']}/{entry['windows_total']} "
            f"false alarms/1k={_fmt(entry['false_alarms_per_1k'])} NAB standard={_fmt_score(nab['standard'])}"
        )
    return "\n".join(lines + format_untrained(summary))


# ---------------------------------------------------------------------------------------------
# SKAB


def evaluate_skab(
    corpus: Path, out: Path, *, hyperparameters: tuple[str, ...], workers: int
) -> dict[str, object]:
    labelled: list[tuple[str, Path, np.ndarray]] = []
    for name, path in corpus_files(corpus):
        labels = read_label_column(path, SKAB_LABEL)
        if labels is None:
            _log.info("no anomaly column: not a test file, skipped", extra={"file": name})
            continue
        labelled.append((name, path, labels))
    if not labelled:
        raise TrainingError(f"no file under {corpus / 'data'} has an {SKAB_LABEL!r} column")
    jobs = [
        FileJob(name=name, path=path, train_rows=SKAB_TRAIN_ROWS, hyperparameters=hyperparameters)
        for name, path, _ in labelled
    ]
    outcomes = run_jobs(jobs, workers)
    label_rows = {name: y for name, _, y in labelled}
    for outcome in outcomes.values():
        write_result_csv(out / outcome.name, outcome, label_rows=SKAB_TRAIN_ROWS)
    summary = skab_summary(outcomes, label_rows)
    summary["hyperparameters"] = list(hyperparameters)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return summary


def skab_summary(outcomes: Mapping[str, FileOutcome], labels: Mapping[str, np.ndarray]) -> dict[str, object]:
    """SKAB's outlier metrics over the test rows (row 400 on) of every file, pooled."""
    pairs = {
        name: (labels[name][o.train_rows :], o.decisions[o.train_rows :]) for name, o in outcomes.items()
    }
    metrics = corpus_binary_metrics(pairs)
    by_category: dict[str, object] = {}
    for category, names in _categories(outcomes).items():
        by_category[category] = _metrics_dict(corpus_binary_metrics({n: pairs[n] for n in names}).total)
    return {
        "metrics": _metrics_dict(metrics.total),
        "per_category": by_category,
        "files": len(outcomes),
        "untrained": untrained_files(outcomes),
        "max_model_bytes": max(o.model_bytes for o in outcomes.values()),
        "seconds": round(sum(o.seconds for o in outcomes.values()), 1),
    }


def _metrics_dict(metrics: BinaryMetrics) -> dict[str, object]:
    return asdict(metrics)


def format_skab(summary: Mapping[str, object]) -> str:
    m = _as_dict(summary["metrics"])
    line = f"SKAB F1={_fmt(m['f1'])} FAR={_fmt(m['far_pct'])}% MAR={_fmt(m['mar_pct'])}%"
    return "\n".join([line, *format_untrained(summary)])


def read_label_column(path: Path, column: str) -> np.ndarray | None:
    """The 0/1 ``column`` of a CSV (``;``, ``,`` or tab separated), or None when it has none."""
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    delimiter = max((",", ";", "\t"), key=lines[0].count)
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [name.strip().lower() for name in rows[0]]
    if column not in header:
        return None
    index = header.index(column)
    try:
        return np.array([float(row[index]) for row in rows[1:]], dtype=np.float64)
    except ValueError as exc:
        raise TrainingError(f"{path}: {column!r} column is not numeric: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Output and CLI


def write_result_csv(path: Path, outcome: FileOutcome, *, label_rows: int | None) -> None:
    """NAB results format ``timestamp,value,anomaly_score`` (SKAB: every channel, plus ``is_anomaly``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Whole seconds as NAB writes them; finer stamps keep their microseconds (else rows would collide).
    whole = (outcome.timestamps.astype("datetime64[us]").astype(np.int64) % 1_000_000 == 0).all()
    times = np.datetime_as_string(outcome.timestamps, unit="s" if whole else "us")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if label_rows is None:
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for t, row, score in zip(times, outcome.values, outcome.scores, strict=True):
                writer.writerow([str(t).replace("T", " "), repr(float(row[0])), f"{score:.6f}"])
        else:
            writer.writerow(["timestamp", *outcome.channels, "anomaly_score", "is_anomaly"])
            for t, row, score, flag in zip(
                times, outcome.values, outcome.scores, outcome.decisions, strict=True
            ):
                writer.writerow(
                    [str(t).replace("T", " "), *(repr(float(v)) for v in row), f"{score:.6f}", int(flag)]
                )


def _as_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _fmt_score(value: float | None) -> str:
    return "undefined (no labelled anomaly window in the scored rows)" if value is None else f"{value:.2f}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=["nab", "skab"])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument(
        "--hp", action="append", default=[], metavar="NAME=VALUE", help="override a hyperparameter"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    runners: dict[
        str, tuple[Mapping[str, str], Callable[..., dict[str, object]], Callable[[Mapping[str, object]], str]]
    ] = {
        "nab": (NAB_HYPERPARAMETERS, evaluate_nab, format_nab),
        "skab": (SKAB_HYPERPARAMETERS, evaluate_skab, format_skab),
    }
    defaults, evaluate, render = runners[args.benchmark]
    try:
        hyperparameters = hyperparameter_argv(defaults, args.hp)
        args.out.mkdir(parents=True, exist_ok=True)
        summary = evaluate(args.corpus, args.out, hyperparameters=hyperparameters, workers=args.workers)
    except TrainingError as exc:
        _log.error("evaluation failed", extra={"error": type(exc).__name__, "reason": str(exc)})
        return EXIT_BAD_INPUT
    sys.stdout.write(render(summary) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
