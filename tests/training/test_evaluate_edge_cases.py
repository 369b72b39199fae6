"""The evaluation on corpora and settings at the edges of NAB's format (a review's reproductions as tests)."""

import json
import math
import shutil
from datetime import datetime, timedelta

import numpy as np
import pytest

from tests.training.test_evaluate import SHARED_PROFILES, _stamp, nab_series, read_result, write_nab_corpus
from training import evaluate
from training.data import parse_csv
from training.errors import ConfigError, NonNumericValueError
from training.train import parse_args


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_symlinked_category_folders_are_walked(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(corpus / "data" / "other", elsewhere)
    (corpus / "data" / "other").symlink_to(elsewhere, target_is_directory=True)

    code = evaluate.main(["nab", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--workers", "1"])

    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["files"] == 2
    assert summary["fixed_threshold"]["postprocessed"]["windows_total"] == 2


def test_labelled_files_missing_from_data_are_named(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    labels = corpus / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    windows["gone/away.csv"] = [[_stamp(10) + ".000000", _stamp(20) + ".000000"]]
    labels.write_text(json.dumps(windows))

    code = evaluate.main(["nab", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--workers", "1"])

    assert code == 0
    warnings = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"WARNING"' in line]
    missing = [w for w in warnings if w["message"].startswith("labelled files not found")]
    assert [(w["files"], w["windows"]) for w in missing] == [(["gone/away.csv"], 1)]


def test_a_corpus_without_any_window_reports_false_alarms_and_null_scores(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    (corpus / "labels" / "combined_windows.json").write_text(
        json.dumps({"synthetic/spike_a.csv": [], "other/spike_b.csv": []})
    )

    code = evaluate.main(["nab", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--workers", "1"])

    assert code == 0
    assert (
        "NAB standard: undefined (no labelled anomaly window in the scored rows)" in capsys.readouterr().out
    )
    summary = _strict_json((tmp_path / "out" / "summary.json").read_text())
    assert isinstance(summary, dict)
    assert summary["scores"] == {"standard": None, "reward_low_FP_rate": None, "reward_low_FN_rate": None}
    fixed = summary["fixed_threshold"]["postprocessed"]
    assert fixed["windows_total"] == 0
    assert fixed["false_alarms"] >= 2  # the two injected spikes are now unlabelled: false alarms
    assert summary["per_category"] == {"other": {"scores": None}, "synthetic": {"scores": None}}


def test_a_threshold_that_detects_nothing_is_written_as_null(tmp_path):
    """The sweep's best threshold is +inf when every detection costs; JSON has no Infinity."""
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    # Windows far from the spikes (rows 100-120 and 150-170): every detection is a false positive.
    labels = {
        "synthetic/spike_a.csv": [[_stamp(100) + ".000000", _stamp(120) + ".000000"]],
        "other/spike_b.csv": [[_stamp(150) + ".000000", _stamp(170) + ".000000"]],
    }
    (corpus / "labels" / "combined_windows.json").write_text(json.dumps(labels))

    assert (
        evaluate.main(["nab", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    )

    summary = _strict_json((tmp_path / "out" / "summary.json").read_text())
    assert isinstance(summary, dict)
    thresholds = summary["thresholds"]
    assert all(t is None or math.isfinite(t) for t in thresholds.values())
    assert None in thresholds.values()


def test_sub_second_timestamps_keep_their_microseconds(tmp_path):
    corpus = tmp_path / "corpus"
    values = nab_series(600, 400, 3)
    start = datetime(2015, 1, 1)
    stamps = [(start + timedelta(microseconds=200 * i)).strftime("%Y-%m-%d %H:%M:%S.%f") for i in range(600)]
    path = corpus / "data" / "fast" / "us.csv"
    path.parent.mkdir(parents=True)
    path.write_text(
        "timestamp,value\n" + "".join(f"{t},{v:.4f}\n" for t, v in zip(stamps, values, strict=True))
    )
    (corpus / "labels").mkdir()
    (corpus / "labels" / "combined_windows.json").write_text(
        json.dumps({"fast/us.csv": [[stamps[380], stamps[420]]]})
    )
    (corpus / "config").mkdir()
    shutil.copy(SHARED_PROFILES, corpus / "config" / "profiles.json")

    assert (
        evaluate.main(["nab", "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    )

    written = [
        line.split(",")[0] for line in (tmp_path / "out" / "fast" / "us.csv").read_text().splitlines()[1:]
    ]
    assert written == stamps


def test_a_model_without_post_processing_is_evaluated_by_the_device_rule(tmp_path):
    """`score > threshold`, as DecisionRule decides on the device, not a default post-processing."""
    corpus = tmp_path / "corpus"
    write_nab_corpus(corpus)
    out = tmp_path / "out"

    code = evaluate.main(
        ["nab", "--corpus", str(corpus), "--out", str(out), "--workers", "1", "--hp", "edge_postprocess="]
    )

    assert code == 0
    _header, body = read_result(out / "synthetic" / "spike_a.csv")
    assert set(np.unique(body[:, 1])) <= {0.0, 1.0}
    summary = json.loads((out / "summary.json").read_text())
    fixed = summary["fixed_threshold"]
    assert fixed["postprocessed"] == fixed["raw_threshold"]


def test_abbreviated_hyperparameters_are_refused():
    """`--model_d` used to be read as --model_dir and move the model out of SM_MODEL_DIR."""
    with pytest.raises(ConfigError, match="model_d"):
        parse_args(["--model_d", "/tmp/elsewhere"], environ={})


@pytest.mark.parametrize("cell", ["1e39", "-3.5e38"])
def test_values_beyond_float32_are_refused_with_the_line(cell):
    raw = f"timestamp,value\n2015-01-01 00:00:00,1.0\n2015-01-01 00:05:00,{cell}\n".encode()
    with pytest.raises(NonNumericValueError, match=r"line 3: .* beyond float32's range"):
        parse_csv(raw, source="x.csv")


def test_values_near_float32_max_are_kept():
    raw = b"timestamp,value\n2015-01-01 00:00:00,3.0e38\n"
    assert parse_csv(raw, source="x.csv").values[0, 0] == pytest.approx(3.0e38)
