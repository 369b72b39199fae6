"""The benchmark command end to end on tiny NAB- and SKAB-format corpora built here."""

import csv
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.training.test_export import metadata_for
from training import evaluate
from training.data import sliding_windows
from training.detector import DetectorConfig, fit, score_windows
from training.errors import TrainingError
from training.eval_pipeline import FileJob, nab_train_rows, run_file
from training.export import build_onnx_model

SHARED_PROFILES = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab" / "config" / "profiles.json"
START = datetime(2024, 1, 1)
STEP = timedelta(minutes=5)


def _stamp(i: int) -> str:
    return (START + i * STEP).strftime("%Y-%m-%d %H:%M:%S")


def nab_series(n: int, anomaly_at: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 1, n)
    values[anomaly_at : anomaly_at + 5] += 40
    return values


def write_nab_corpus(root: Path) -> dict[str, np.ndarray]:
    series = {"synthetic/spike_a.csv": nab_series(700, 500, 1), "other/spike_b.csv": nab_series(600, 400, 2)}
    windows = {}
    for name, values in series.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{_stamp(i)},{v:.4f}" for i, v in enumerate(values)]
        path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        at = 500 if name.startswith("synthetic") else 400
        windows[name] = [[_stamp(at - 20) + ".000000", _stamp(at + 20) + ".000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "config").mkdir()
    shutil.copy(SHARED_PROFILES, root / "config" / "profiles.json")
    return series


def read_result(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open() as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array([[float(x) for x in row[1:]] for row in rows[1:]])


def test_nab_command_writes_results_and_prints_the_three_scores(tmp_path, capsys):
    series = write_nab_corpus(tmp_path / "corpus")
    out = tmp_path / "results"

    code = evaluate.main(["nab", "--corpus", str(tmp_path / "corpus"), "--out", str(out), "--workers", "1"])

    assert code == 0
    printed = capsys.readouterr().out
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert f"NAB {profile}: " in printed
    assert "fixed threshold (raw_threshold): precision=" in printed
    for name, values in series.items():
        header, body = read_result(out / name)
        assert header == ["timestamp", "value", "anomaly_score"]
        assert body.shape == (values.size, 2)
        np.testing.assert_allclose(body[:, 0], np.round(values, 4))
        scores = body[:, 1]
        assert np.all((scores >= 0) & (scores <= 1))
        assert np.all(scores[:31] == 0)  # before the first full window of 32 rows
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["scores"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    # Two obvious spikes: the detector finds both windows.
    assert summary["fixed_threshold"]["postprocessed"]["windows_hit"] == 2
    assert summary["scores"]["standard"] > 50


def test_scores_are_causal_rows_after_k_do_not_change_scores_up_to_k(tmp_path):
    values = nab_series(700, 500, 3)
    k = 450
    assert nab_train_rows(values.size) < k
    altered = values.copy()
    altered[k + 1 :] = np.random.default_rng(4).uniform(-500, 500, values.size - k - 1)
    outcomes = []
    for label, data in (("a", values), ("b", altered)):
        path = tmp_path / f"{label}.csv"
        path.write_text(
            "timestamp,value\n" + "".join(f"{_stamp(i)},{float(v)!r}\n" for i, v in enumerate(data))
        )
        hyperparameters = evaluate.hyperparameter_argv(evaluate.NAB_HYPERPARAMETERS, [])
        outcomes.append(
            run_file(FileJob(name=label, path=path, train_rows=None, hyperparameters=hyperparameters))
        )

    first, second = outcomes
    np.testing.assert_array_equal(first.scores[: k + 1], second.scores[: k + 1])
    np.testing.assert_array_equal(first.raw_scores[: k + 1], second.raw_scores[: k + 1])
    assert not np.array_equal(first.scores[k + 1 :], second.scores[k + 1 :])
    assert first.train_rows == nab_train_rows(700) == 105


def write_skab_file(
    path: Path, n: int, start: int, end: int, seed: int, *, labelled: bool = True
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 1, (n, 3)) + np.array([10.0, 5.0, 32.0])
    data[start:end, 2] -= 6.0  # a valve closes: the flow drops for a long segment
    labels = np.zeros(n)
    labels[start:end] = 1.0
    header = "datetime;Accelerometer;Pressure;Flow" + (";anomaly;changepoint" if labelled else "")
    lines = [header]
    for i in range(n):
        stamp = (START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        cells = [stamp, *(f"{v:.5f}" for v in data[i])]
        if labelled:
            cells += [f"{labels[i]:.1f}", "0.0"]
        lines.append(";".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return labels


def test_skab_command_scores_the_test_rows_and_skips_unlabelled_files(tmp_path, capsys):
    corpus = tmp_path / "skab"
    write_skab_file(corpus / "data" / "valve1" / "0.csv", 700, 450, 600, 1)
    write_skab_file(corpus / "data" / "valve1" / "1.csv", 650, 500, 620, 2)
    write_skab_file(corpus / "data" / "anomaly-free" / "anomaly-free.csv", 600, 0, 0, 3, labelled=False)
    out = tmp_path / "results"

    code = evaluate.main(["skab", "--corpus", str(corpus), "--out", str(out), "--workers", "1"])

    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("SKAB F1=")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == 2
    metrics = summary["metrics"]
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == (700 - 400) + (650 - 400)
    assert metrics["tp"] > 50
    header, body = read_result(out / "valve1" / "0.csv")
    assert header == ["timestamp", "Accelerometer", "Pressure", "Flow", "anomaly_score", "is_anomaly"]
    assert body.shape == (700, 5)
    # Alarms fall inside the flow drop (rows 500-619) or, at most, the smoothing plus the hold period
    # after its end; never before it.
    post = json.loads(evaluate.SKAB_HYPERPARAMETERS["edge_postprocess"])
    alarms = np.flatnonzero(read_result(out / "valve1" / "1.csv")[1][:, 4] == 1)
    assert alarms.size > 50
    assert alarms.min() >= 500
    assert alarms.max() < 620 + post["short_window"] + post["hold_rows"]
    assert np.all((body[:, 3] >= 0) & (body[:, 3] <= 1))
    assert not (out / "anomaly-free").exists()


def test_bad_corpus_exits_2(tmp_path):
    assert evaluate.main(["nab", "--corpus", str(tmp_path), "--out", str(tmp_path / "o")]) == 2


def test_hyperparameter_overrides_replace_defaults():
    argv = evaluate.hyperparameter_argv({"window_length": "32", "mean_weight": "0.5"}, ["window_length=16"])
    assert argv == ("--window_length", "16", "--mean_weight", "0.5")
    with pytest.raises(TrainingError, match="--hp expects name=value, got 'oops'"):
        evaluate.hyperparameter_argv({}, ["oops"])


def test_onnx_matches_numpy_with_multiscale_jumps_and_level_term():
    rng = np.random.default_rng(5)
    values = np.cumsum(rng.normal(0, 1, (400, 3)), axis=0) + np.array([10.0, -3.0, 100.0])
    config = DetectorConfig(
        window_length=16,
        jump_lengths=(2, 8),
        jump_weight=0.7,
        level_length=8,
        level_weight=3.0,
        level_horizon=50.0,
    )
    model = fit([values[:300]], ["a", "b", "c"], config)
    windows = sliding_windows(values, 16).astype(np.float32)
    session = ort.InferenceSession(build_onnx_model(model, metadata_for(model)).SerializeToString())

    (onnx_scores,) = session.run(["score"], {"window": windows})
    expected = score_windows(model, windows)

    np.testing.assert_allclose(onnx_scores, expected.astype(np.float32), rtol=1e-5, atol=1e-5)
    # The extra terms really contribute: without them the scores differ.
    plain = fit([values[:300]], ["a", "b", "c"], DetectorConfig(window_length=16))
    assert not np.allclose(score_windows(plain, windows), expected)


def test_postprocess_scores_feeds_the_newest_values_to_the_value_checks():
    from greengrass_components.anomaly_detector.postprocess import PostprocessConfig
    from training.eval_pipeline import EvaluationError, postprocess_scores

    config = PostprocessConfig(short_window=3, long_window=100, warmup=5, spatial_tolerance=0.05)
    raw = np.ones(40)
    values = np.sin(np.arange(40.0))[:, None]
    values[-1, 0] = 5.0
    assert postprocess_scores(raw, config, 3.0, values)[-1] == 1.0
    assert postprocess_scores(raw, config, 3.0)[-1] < 1.0
    with pytest.raises(EvaluationError, match="39 value rows for 40 raw scores"):
        postprocess_scores(raw, config, 3.0, values[:-1])
