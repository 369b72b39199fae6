"""A file too short to train on gets the null detector (scores 0, reported), not an aborted evaluation."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_evaluate import _stamp, nab_series, read_result, write_nab_corpus, write_skab_file
from training import evaluate
from training.detector import MIN_TRAINING_WINDOWS
from training.eval_pipeline import FileJob, run_file

NAB_HP = evaluate.hyperparameter_argv(evaluate.NAB_HYPERPARAMETERS, [])
WINDOW = int(evaluate.NAB_HYPERPARAMETERS["window_length"])
# The trainer's own words for the 60-row file's 9 training rows (floor(0.15 * 60)).
TINY_REASON = (
    f"9 training rows give 0 windows of length {WINDOW}; at least {MIN_TRAINING_WINDOWS} are needed "
    f"(a file needs {WINDOW + MIN_TRAINING_WINDOWS - 1} rows)"
)


def write_nab_file(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{_stamp(i)},{v:.4f}\n" for i, v in enumerate(values)))


def test_nab_scores_a_too_short_file_as_zero_and_reports_it(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    tiny = nab_series(60, 40, 7)
    write_nab_file(corpus / "data" / "other" / "tiny.csv", tiny)
    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    windows["other/tiny.csv"] = [[_stamp(35) + ".000000", _stamp(50) + ".000000"]]
    (corpus / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    out = tmp_path / "results"

    code = evaluate.main(["nab", "--corpus", str(corpus), "--out", str(out), "--workers", "1"])

    assert code == 0
    captured = capsys.readouterr()
    assert "files scored 0 throughout (too few rows to train and score): 1 (other/tiny.csv)" in captured.out
    warnings = [json.loads(line) for line in captured.err.splitlines() if '"WARNING"' in line]
    assert [(w["file"], w["reason"]) for w in warnings if "file" in w] == [("other/tiny.csv", TINY_REASON)]

    header, body = read_result(out / "other" / "tiny.csv")
    assert header == ["timestamp", "value", "anomaly_score"]
    assert body.shape == (60, 2)
    np.testing.assert_allclose(body[:, 0], np.round(tiny, 4))
    assert np.all(body[:, 1] == 0)
    _, trained = read_result(out / "synthetic" / "spike_a.csv")
    assert trained.shape == (700, 2)
    assert trained[:, 1].max() > 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["untrained"] == {"other/tiny.csv": TINY_REASON}
    assert summary["files"] == 3
    assert summary["rows"] == 700 + 600 + 60
    assert summary["max_model_bytes"] > 0
    # The tiny file counts: its window is a miss, at the deployed threshold and after post-processing.
    for entry in summary["fixed_threshold"].values():
        assert (entry["windows_hit"], entry["windows_total"]) == (2, 3)
    at_corpus = summary["per_category"]["other"]["at_corpus_threshold"]["standard"]
    assert at_corpus["fn"] >= 1


def test_nab_corpus_of_trainable_files_prints_no_untrained_line(tmp_path, capsys):
    write_nab_corpus(tmp_path / "corpus")
    out = tmp_path / "results"

    code = evaluate.main(["nab", "--corpus", str(tmp_path / "corpus"), "--out", str(out), "--workers", "1"])

    assert code == 0

    assert "scored 0 throughout" not in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["untrained"] == {}


@pytest.mark.parametrize(
    ("n_rows", "reason"),
    [
        (5, "cannot train on 0 of 5 rows"),  # NAB's probation: floor(0.15 * 5) = 0 rows
        (60, TINY_REASON),
    ],
)
def test_run_file_returns_the_null_detector_for_a_file_too_short_to_train(tmp_path, n_rows, reason):
    path = tmp_path / "short.csv"
    write_nab_file(path, nab_series(n_rows, 0, 1))

    outcome = run_file(FileJob(name="cat/short.csv", path=path, train_rows=None, hyperparameters=NAB_HP))

    assert outcome.untrained is not None
    assert outcome.untrained.startswith(reason)
    assert outcome.scores.shape == outcome.raw_scores.shape == (n_rows,)
    assert not outcome.scores.any()
    assert not outcome.raw_scores.any()
    assert not outcome.decisions.any()
    assert not outcome.raw_decisions.any()
    assert outcome.raw_threshold == math.inf
    assert outcome.model_bytes == 0
    assert outcome.window_length == WINDOW


def test_the_trainability_boundary_is_the_trainers(tmp_path):
    # window_length + MIN_TRAINING_WINDOWS - 1 training rows train; one fewer is the trainer's error.
    path = tmp_path / "f.csv"
    write_nab_file(path, nab_series(300, 250, 2))
    needed = WINDOW + MIN_TRAINING_WINDOWS - 1

    trained = run_file(FileJob(name="f", path=path, train_rows=needed, hyperparameters=NAB_HP))
    short = run_file(FileJob(name="f", path=path, train_rows=needed - 1, hyperparameters=NAB_HP))

    assert trained.untrained is None
    assert trained.model_bytes > 0
    assert trained.scores.max() > 0
    assert short.untrained == (
        f"{needed - 1} training rows give {MIN_TRAINING_WINDOWS - 1} windows of length {WINDOW}; "
        f"at least {MIN_TRAINING_WINDOWS} are needed (a file needs {needed} rows)"
    )
    # The window length comes from the hyperparameters, not a constant.
    hp16 = evaluate.hyperparameter_argv(evaluate.NAB_HYPERPARAMETERS, ["window_length=16"])
    shorter_window = run_file(FileJob(name="f", path=path, train_rows=needed - 1, hyperparameters=hp16))
    assert shorter_window.untrained is None
    assert shorter_window.window_length == 16


def test_a_corrupt_value_still_fails_the_evaluation_with_a_clear_error(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    path = corpus / "data" / "other" / "spike_b.csv"
    lines = path.read_text().splitlines()
    lines[300] = lines[300].split(",")[0] + ",12.5x"
    path.write_text("\n".join(lines) + "\n")

    code = evaluate.main(["nab", "--corpus", str(corpus), "--out", str(tmp_path / "r"), "--workers", "1"])

    assert code == evaluate.EXIT_BAD_INPUT
    errors = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"ERROR"' in line]
    assert errors[-1]["error"] == "NonNumericValueError"
    assert "spike_b.csv" in errors[-1]["reason"]
    assert "12.5x" in errors[-1]["reason"]


def test_skab_scores_a_file_without_test_rows_as_zero_and_reports_it(tmp_path, capsys):
    corpus = tmp_path / "skab"
    write_skab_file(corpus / "data" / "valve1" / "0.csv", 700, 450, 600, 1)
    short_labels = write_skab_file(corpus / "data" / "valve1" / "short.csv", 300, 100, 150, 2)
    out = tmp_path / "results"

    code = evaluate.main(["skab", "--corpus", str(corpus), "--out", str(out), "--workers", "1"])

    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("SKAB F1=")
    assert "files scored 0 throughout (too few rows to train and score): 1 (valve1/short.csv)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["untrained"]) == ["valve1/short.csv"]
    assert summary["untrained"]["valve1/short.csv"].startswith("cannot train on 400 of 300 rows")
    header, body = read_result(out / "valve1" / "short.csv")
    assert header[-2:] == ["anomaly_score", "is_anomaly"]
    assert body.shape == (300, 5)
    assert not body[:, 3].any()
    assert not body[:, 4].any()
    assert short_labels.any()  # labelled anomalies, all within SKAB's 400 training rows: none is scored
    metrics = summary["metrics"]
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == 700 - 400
