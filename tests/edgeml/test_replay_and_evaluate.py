"""`train local` then `replay`: a model trained in the test, a real file, the summary parsed from JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from edgeml.cli import EXIT_OK, EXIT_USAGE, main
from tests.training.test_evaluate import write_nab_corpus

REPO = Path(__file__).resolve().parents[2]
NAB_SLICE = REPO / "tests" / "training" / "data" / "machine_temperature_head2500.csv"


def run(*argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, json.loads(out.getvalue()) if code == EXIT_OK else {}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("model")
    argv = ["train", "local", "--data-dir", str(NAB_SLICE), "--model-dir", str(model_dir)]
    code, trained = run("--json", *argv, "-p", "window_length=32", "-p", "model_name=pump")
    assert code == EXIT_OK
    assert trained == {"model_path": str(model_dir / "model.onnx")}
    return model_dir / "model.onnx"


def test_replay_scores_every_row_and_reports_the_anomalies_as_json(model, capsys):
    code, summary = run("--progress", "on", "replay", str(NAB_SLICE), "--model", str(model), "--json")
    assert code == EXIT_OK
    metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert summary["model_version"] == metadata["model_version"]
    assert summary["file"] == str(NAB_SLICE)
    assert summary["stream"] == "machine_temperature_head2500"
    assert summary["samples_in"] == 2500
    assert summary["windows_scored"] == 2500 - 32 + 1
    assert summary["rejects"] == {}
    # Anomalies only: a handful of events out of 2469 windows, each forwarded once with its timestamp.
    assert 1 <= summary["anomalies_forwarded"] < 20
    assert len(summary["anomaly_timestamps"]) == summary["anomalies_forwarded"]
    assert "2500/2500" in capsys.readouterr().err  # the progress bar reached the end


def test_replay_text_output_and_a_missing_file(model, tmp_path, capsys):
    out = io.StringIO()
    assert (
        main(
            ["--progress", "off", "replay", str(NAB_SLICE), "--model", str(model), "--stream", "m1"], out=out
        )
        == 0
    )
    text = out.getvalue()
    assert "stream: m1" in text
    assert "samples_in: 2500" in text
    assert main(["replay", str(tmp_path / "nope.csv"), "--model", str(model)]) == EXIT_USAGE
    assert "cannot open replay file" in capsys.readouterr().err


def test_evaluate_nab_writes_the_summary_and_follows_files_with_a_bar(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    code, summary = run("--progress", "on", "evaluate", "nab", "--corpus", str(corpus),
                        "--out", str(tmp_path / "out"), "--workers", "1", "--json")  # fmt: skip
    assert code == EXIT_OK
    assert summary["files"] == 2
    assert set(summary["scores"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["files"] == 2
    assert "2/2" in capsys.readouterr().err
