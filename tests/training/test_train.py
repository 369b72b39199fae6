import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.training.train_helpers import (
    NAB_SLICE,
    onnx_scores,
    session,
    synthetic_channels,
    timestamps,
    write_csv,
)
from training.data import load_csv, sliding_windows
from training.detector import score_windows
from training.errors import ConfigError
from training.export import REQUIRED_METADATA_KEYS
from training.train import TrainConfig, default_model_version, main, parse_args, parse_channels, train

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def sagemaker_env(tmp_path, monkeypatch) -> dict[str, Path]:
    paths = {
        "train": tmp_path / "input" / "data" / "train",
        "model": tmp_path / "model",
        "output_data": tmp_path / "output" / "data",
        "output": tmp_path / "output",
    }
    paths["train"].mkdir(parents=True)
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(paths["train"]))
    monkeypatch.setenv("SM_MODEL_DIR", str(paths["model"]))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(paths["output_data"]))
    monkeypatch.setenv("SM_OUTPUT_DIR", str(paths["output"]))
    return paths


def json_logs(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_main_trains_from_sagemaker_environment(sagemaker_env, capsys):
    shutil.copy(NAB_SLICE, sagemaker_env["train"] / NAB_SLICE.name)

    code = main(["--window_length", "32", "--train_rows", "1500", "--model_name", "machine-temp"])

    assert code == 0
    model_path = sagemaker_env["model"] / "model.onnx"
    metrics = json.loads((sagemaker_env["model"] / "metrics.json").read_text())
    assert (sagemaker_env["output_data"] / "metrics.json").read_text() == (
        sagemaker_env["model"] / "metrics.json"
    ).read_text()
    data_sha = hashlib.sha256(NAB_SLICE.read_bytes()).hexdigest()
    assert metrics["model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert metrics["training_data_sha256"] == data_sha
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-{data_sha[:8]}", metrics["model_version"])
    assert metrics["model_name"] == "machine-temp"
    training = metrics["training_metrics"]
    assert training["n_train_rows"] == 1500
    assert training["n_windows"] == 1500 - 31
    assert training["files"] == [
        {"name": NAB_SLICE.name, "sha256": data_sha, "rows": 2500, "train_rows": 1500, "missing_filled": 0}
    ]
    assert training["calibration"]["rule"] == "quantile"
    assert training["calibration"]["threshold"] == metrics["threshold"]

    proto = onnx.load(str(model_path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert set(REQUIRED_METADATA_KEYS) <= set(props)
    assert float(props["threshold"]) == metrics["threshold"]
    assert json.loads(props["training_metrics"]) == training
    assert props["model_version"] == metrics["model_version"]

    values = load_csv(NAB_SLICE).values
    out = onnx_scores(session(proto), sliding_windows(values, 32)[:100])
    assert out.shape == (100,)

    logs = json_logs(capsys.readouterr().err)
    assert [entry["message"] for entry in logs] == [
        "loading training data",
        "training data loaded",
        "model written",
    ]
    assert logs[-1]["model_sha256"] == metrics["model_sha256"]
    assert all(entry["level"] == "INFO" and entry["logger"] == "training.train" for entry in logs)


def test_held_out_spike_scores_above_threshold_and_clean_data_mostly_below():
    series = load_csv(NAB_SLICE)
    config = TrainConfig(train_path=NAB_SLICE, model_dir=Path("unused"), train_rows=1500)
    trained = train(config, [series], now=NOW)
    threshold = trained.calibration.threshold
    # Held-out rows 1,500 .. 2,100 end before NAB's first labelled anomaly window (row 2,126).
    held_out = series.values[1500 - 31 : 2100].copy()
    sess = session(trained.proto)

    clean = onnx_scores(sess, sliding_windows(held_out, 32))
    held_out[300, 0] += 6.0  # a 6-degree spike; typical 5-minute steps are under 1 degree
    spiked = onnx_scores(sess, sliding_windows(held_out, 32))

    assert np.mean(clean > threshold) < 0.02
    assert spiked[300 - 31] > threshold
    assert spiked[300 - 31] > 1.5 * clean[300 - 31]


def test_multichannel_skab_style_directory(sagemaker_env):
    values = synthetic_channels(400)
    for name, rows in (("0.csv", values[:200]), ("1.csv", values[200:])):
        write_csv(
            sagemaker_env["train"] / name,
            ["datetime", "Pressure", "Current", "Temperature", "anomaly", "changepoint"],
            [
                [ts, *(f"{v:.6f}" for v in row), "0.0", "0.0"]
                for ts, row in zip(timestamps(200), rows, strict=True)
            ],
            delimiter=";",
        )

    code = main(
        ["--window_length", "16", "--channels", '["Temperature", "Pressure"]', "--model_version", "v1"]
    )

    assert code == 0
    proto = onnx.load(str(sagemaker_env["model"] / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["channels"]) == ["Temperature", "Pressure"]
    assert props["model_version"] == "v1"
    metrics = json.loads(props["training_metrics"])
    assert metrics["n_files"] == 2
    assert metrics["n_windows"] == 2 * (200 - 15)
    windows = sliding_windows(values[:, [2, 0]], 16)
    assert onnx_scores(session(proto), windows).shape == (windows.shape[0],)


@pytest.mark.parametrize(
    ("files", "argv", "expected"),
    [
        ({}, [], ("EmptyDataError", "no .csv file in")),
        (
            {"a.csv": "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,high\n"},
            [],
            ("NonNumericValueError", "a.csv line 3: 'high' in column 'value' is not a finite number"),
        ),
        (
            {"a.csv": "timestamp,value,dead\n2024-01-01 00:00:00,1,nan\n2024-01-01 00:05:00,2,\n"},
            [],
            ("AllMissingChannelError", "a.csv: column 'dead' has no values (all empty or NaN)"),
        ),
        (
            {"a.csv": "timestamp,value\n" + "".join(f"{i},{i}\n" for i in range(40))},
            [],
            ("TooFewRowsError", "40 training rows give 9 windows of length 32"),
        ),
        (
            {"a.csv": "timestamp,value\n"},
            [],
            ("EmptyDataError", "a.csv: the file has a header but no data rows"),
        ),
        ({}, ["--window_length", "1"], ("ConfigError", "window_length must be at least 2, got 1")),
        ({}, ["--window_lenght", "16"], ("ConfigError", "unknown hyperparameters: ['--window_lenght']")),
    ],
)
def test_bad_input_exits_2_with_a_clear_reason(sagemaker_env, capsys, files, argv, expected):
    error, reason = expected
    for name, text in files.items():
        (sagemaker_env["train"] / name).write_text(text)

    code = main(argv)

    assert code == 2
    (entry,) = json_logs(capsys.readouterr().err)[-1:]
    assert entry["level"] == "ERROR"
    assert entry["error"] == error
    assert reason in str(entry["reason"])
    assert (sagemaker_env["output"] / "failure").read_text().startswith(f"{error}: ")
    assert reason in (sagemaker_env["output"] / "failure").read_text()
    assert not (sagemaker_env["model"] / "model.onnx").exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b"timestamp,value\n"
            + b"".join(b"%d,%d\n" % (1_700_000_000_000 + 60_000 * i, i) for i in range(40)),
            (
                "InvalidTimestampError",
                "ms.csv line 2: '1700000000000' in column 'timestamp' is not a timestamp",
            ),
        ),
        (
            "timestamp,unit\n2024-01-01 00:00:00,\u00b0C\n".encode("cp1252"),
            ("MalformedCsvError", "ms.csv line 2: byte 0xb0 at offset 35 is not UTF-8"),
        ),
    ],
)
def test_unreadable_data_exits_2_naming_the_file_and_line(sagemaker_env, capsys, raw, expected):
    error, reason = expected
    (sagemaker_env["train"] / "ms.csv").write_bytes(raw)

    code = main([])

    assert code == 2
    entry = json_logs(capsys.readouterr().err)[-1]
    assert (entry["error"], entry["level"]) == (error, "ERROR")
    assert reason in str(entry["reason"])
    assert (sagemaker_env["output"] / "failure").read_text().startswith(f"{error}: {reason}")


def test_an_unexpected_error_exits_1_and_still_writes_its_reason(sagemaker_env, capsys):
    shutil.copy(NAB_SLICE, sagemaker_env["train"] / NAB_SLICE.name)
    # The model directory is taken by a file: an OSError, no TrainingError.
    sagemaker_env["model"].write_text("not a directory")

    code = main(["--window_length", "16", "--train_rows", "300"])

    assert code == 1
    failure = (sagemaker_env["output"] / "failure").read_text()
    assert re.match(r"unexpected error: (FileExistsError|NotADirectoryError): ", failure), failure
    assert str(sagemaker_env["model"]) in failure
    entry = json_logs(capsys.readouterr().err)[-1]
    assert entry["message"] == "training failed unexpectedly"
    assert entry["level"] == "ERROR"
    assert "Traceback" in str(entry["exception"])


def test_a_failure_file_that_cannot_be_written_keeps_the_exit_code_and_the_logged_reason(
    sagemaker_env, capsys
):
    # SM_OUTPUT_DIR is taken by a file: the reason survives in the log, the exit code is unchanged.
    sagemaker_env["output"].write_text("")

    code = main([])

    assert code == 2
    entries = json_logs(capsys.readouterr().err)
    assert [e["message"] for e in entries[-2:]] == ["training failed", "could not write the failure file"]
    assert entries[-2]["error"] == "EmptyDataError"


def test_a_long_reason_is_cut_to_what_failure_reason_holds(sagemaker_env):
    shutil.copy(NAB_SLICE, sagemaker_env["train"] / NAB_SLICE.name)

    code = main(["--channels", "x" * 1500])

    assert code == 2
    failure = (sagemaker_env["output"] / "failure").read_text()
    assert failure.startswith(f"MissingChannelError: {NAB_SLICE.name}: channels ['xxx")
    assert len(failure) == 1000 + len("\n")
    assert failure.endswith("...\n")


def test_metrics_stay_bounded_for_thousands_of_files(sagemaker_env):
    """100 devices x 30 daily files: the metrics must fit the lineage registry's DynamoDB item (400 KB)."""
    n_files = 3000
    rows = 12
    start = np.datetime64("2026-01-01T00:00:00")
    for index in range(n_files):
        lines = ["timestamp,value"] + [
            f"{start + np.timedelta64(60 * (index * rows + i), 's')},{(index * 7 + i) % 11}"
            for i in range(rows)
        ]
        (sagemaker_env["train"] / f"device-{index // 30:03d}-day-{index % 30:02d}.csv").write_text(
            "\n".join(lines) + "\n"
        )

    code = main(["--window_length", "4", "--model_version", "v1"])

    assert code == 0
    proto = onnx.load(str(sagemaker_env["model"] / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert len(props["training_metrics"].encode()) < 64 * 1024
    training = json.loads(props["training_metrics"])
    assert training["n_files"] == n_files
    assert len(training["files"]) == 20
    assert training["files"][0]["name"] == "device-000-day-00.csv"
    assert training["files_truncated"] == n_files - 20
    assert training["n_rows"] == training["n_train_rows"] == n_files * rows
    # Every file is still accounted for: the manifest lists all and hashes to training_data_sha256.
    manifest = (sagemaker_env["output_data"] / "training-files.sha256").read_bytes()
    assert len(manifest.splitlines()) == n_files
    assert hashlib.sha256(manifest).hexdigest() == props["training_data_sha256"]
    assert (sagemaker_env["model"] / "training-files.sha256").read_bytes() == manifest


def test_parse_args_takes_paths_from_the_environment(monkeypatch):
    monkeypatch.delenv("SM_OUTPUT_DIR", raising=False)
    env = {"SM_MODEL_DIR": "/m", "SM_CHANNEL_TRAIN": "/t", "SM_OUTPUT_DATA_DIR": "/o"}

    config = parse_args([], environ=env)

    assert config == TrainConfig(train_path=Path("/t"), model_dir=Path("/m"), output_data_dir=Path("/o"))
    assert config.window_length == 32
    assert config.train_rows is None
    assert config.train_fraction is None
    assert config.channels is None


def test_parse_args_defaults_without_sagemaker(monkeypatch):
    config = parse_args([], environ={})

    assert config.model_dir == Path("/opt/ml/model")
    assert config.train_path == Path("/opt/ml/input/data/train")
    assert config.output_data_dir is None


def test_parse_args_reads_every_hyperparameter_in_either_spelling():
    argv = [
        "--window-length",
        "64",
        "--ridge_alpha",
        "0.01",
        "--mean-weight",
        "0",
        "--threshold_rule",
        "mad",
        "--threshold_mad_k",
        "7",
        "--threshold-quantile",
        "0.99",
        "--threshold_margin",
        "2",
        "--model_name",
        "pump",
        "--model-version",
        "2026.1",
        "--train_fraction",
        "0.15",
        "--channels",
        "a, b",
        "--train",
        "/data/x.csv",
        "--model_dir",
        "/out",
        "--sagemaker_program",
        "train.py",
    ]

    config = parse_args(argv, environ={"SM_MODEL_DIR": "/ignored"})

    assert config == TrainConfig(
        train_path=Path("/data/x.csv"),
        model_dir=Path("/out"),
        window_length=64,
        ridge_alpha=0.01,
        mean_weight=0.0,
        threshold_rule="mad",
        threshold_quantile=0.99,
        threshold_margin=2.0,
        threshold_mad_k=7.0,
        model_name="pump",
        model_version="2026.1",
        train_fraction=0.15,
        channels=("a", "b"),
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train_rows", "10", "--train_fraction", "0.5"], "give train_rows or train_fraction, not both"),
        (["--train_rows", "0"], "train_rows must be >= 1, got 0"),
        (["--train_fraction", "1.5"], r"train_fraction must be in \(0, 1\], got 1.5"),
        (["--threshold_quantile", "0"], r"threshold quantile must be in \(0, 1\], got 0.0"),
        (["--ridge_alpha", "-1"], "ridge_alpha must be > 0, got -1.0"),
        (["--model_name", "a/b"], "model_name 'a/b' must be 1-128 characters"),
        (["--channels", "a,a"], r"channels must be distinct non-empty names, got \['a', 'a'\]"),
        (["--channels", "[1, 2]"], "channels must be a JSON list of strings"),
        (["--channels", "a,"], r"channels must be distinct non-empty names, got \['a', ''\]"),
        (["--channels", "[oops"], "channels is not a valid JSON list"),
        (["--window_length", "abc"], "argument --window-length/--window_length: invalid int value: 'abc'"),
        (["--threshold_rule", "max"], "argument --threshold-rule/--threshold_rule: invalid choice: 'max'"),
    ],
)
def test_parse_args_rejects_bad_hyperparameters(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv, environ={})


def test_parse_channels_forms():
    assert parse_channels(None) is None
    assert parse_channels("  ") is None
    assert parse_channels("value") == ("value",)
    assert parse_channels('["Volume Flow RateRMS", "Current"]') == ("Volume Flow RateRMS", "Current")


def test_default_model_version_is_utc_time_and_data_prefix():
    assert default_model_version(NOW, "3f2a9c1d" + "e" * 56) == "20261124T201500Z-3f2a9c1d"


def test_numpy_scores_of_the_trained_model_match_its_threshold_units():
    series = load_csv(NAB_SLICE)
    trained = train(
        TrainConfig(train_path=NAB_SLICE, model_dir=Path("unused"), train_rows=1500), [series], now=NOW
    )
    scores = score_windows(trained.detector, sliding_windows(series.values[:1500], 32))

    assert np.mean(scores > trained.calibration.threshold) == trained.calibration.fraction_over_threshold


def test_module_runs_as_a_script(tmp_path):
    shutil.copy(NAB_SLICE, tmp_path / "data.csv")

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--train",
            str(tmp_path / "data.csv"),
            "--model_dir",
            str(tmp_path / "model"),
            "--train_rows",
            "600",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "model.onnx").is_file()
    assert json_logs(result.stderr)[-1]["message"] == "model written"
