"""The deployed component decides exactly what the detection evaluation reports, on real NAB data.

``training/eval_pipeline.run_file`` trains on the leading rows and post-processes the edge engine's raw
scores itself; here the same trained model runs through ``DetectorApp`` fed columnar JSON messages (the
device's path: parse, window, infer, post-process, decide, spool), and every window's decision and
post-processed score must equal the evaluation's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.batch import ScoredBatch
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.scoring import ScoringEngine
from greengrass_components.anomaly_detector.transport import InMemoryTransport
from tests.training.train_helpers import NAB_SLICE
from training import train
from training.data import load_csv
from training.eval_pipeline import FileJob, nab_train_rows, run_file, strictly_increasing
from training.evaluate import NAB_POSTPROCESS

from .helpers import ListSource
from .test_app import make_app

# Raw-score likelihood only (no check reads sample values).
SCORES_ONLY = {
    "method": "likelihood", "short_window": 10, "long_window": 1000, "warmup": 100, "log_scores": False,
    "min_std": 0.1, "suppress_level": 0.5, "suppress_rows": 400, "suppress_factor": 0.0,
}  # fmt: skip


def hyperparameters(postprocess: object) -> tuple[str, ...]:
    return ("--window_length", "32", "--edge_postprocess", json.dumps(postprocess))


class RecordingEngine(ScoringEngine):
    """The real engine; remembers every batch's decisions in order."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.flags: list[bool] = []
        self.post: list[float] = []
        self.raw: list[float] = []

    def flush(self) -> ScoredBatch | None:
        batch = super().flush()
        if batch is not None:
            self.flags.extend(batch.anomalous().tolist())
            assert batch.post_scores is not None
            self.post.extend(batch.post_scores.tolist())
            self.raw.extend(batch.scores.tolist())
        return batch


def float32_slice(target: Path) -> Path:
    """The NAB slice with each value rounded to the nearest float32 (a change below 1e-7 relative).

    The device holds sample values as float32 (the model's input type) and the value-based checks read
    them from the window; the evaluation reads the CSV's float64. On float32-exact values both see the
    same numbers, so the comparison can be exact instead of within a tolerance.
    """
    lines = NAB_SLICE.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:] if line.strip()]
    body = [f"{ts},{float(np.float32(value))!r}" for ts, value in rows]
    target.write_text("\n".join([lines[0], *body]) + "\n")
    return target


def train_like_run_file(work: Path, data: Path, argv_tail: tuple[str, ...]) -> Path:
    """The model ``run_file`` trains: same leading rows, same arguments."""
    lines = [line for line in data.read_text().splitlines() if line.strip()]
    rows = nab_train_rows(len(lines) - 1)
    (work / "train").mkdir()
    (work / "train" / data.name).write_text("\n".join(lines[: rows + 1]) + "\n")
    argv = ["--train", str(work / "train"), "--model_dir", str(work / "model"), "--model_version", "eval"]
    assert train.main([*argv, *argv_tail]) == train.EXIT_OK
    return work / "model" / train.MODEL_FILE


@pytest.mark.parametrize(
    "postprocess",
    [SCORES_ONLY, NAB_POSTPROCESS],
    ids=["scores-only", "evaluation-nab-settings"],
)
def test_component_decisions_equal_the_evaluations_on_a_nab_slice(
    tmp_path: Path, postprocess: object
) -> None:
    data = float32_slice(tmp_path / NAB_SLICE.name)
    argv_tail = hyperparameters(postprocess)
    outcome = run_file(FileJob(name="nab-slice", path=data, train_rows=None, hyperparameters=argv_tail))
    model = load_model(train_like_run_file(tmp_path, data, argv_tail))
    series = load_csv(data)
    epoch = strictly_increasing(series.timestamps.astype("datetime64[us]").astype(np.int64) / 1e6)
    values = series.values[:, 0]
    messages = [
        json.dumps(
            {
                "stream": "m",
                "timestamps": epoch[i : i + 200].tolist(),
                "values": {"value": values[i : i + 200].tolist()},
            }
        ).encode()
        for i in range(0, len(values), 200)
    ]
    engine = RecordingEngine(model, batch_size=64)
    app = make_app(model, ListSource(messages), InMemoryTransport(), engine=engine)

    stats = app.run()

    first = model.metadata.window_length - 1
    assert stats.rejects == {}
    assert np.array_equal(np.asarray(engine.raw), outcome.raw_scores[first:].astype(np.float32))  # same model
    # The device post-processes each 200-sample block with the vectorised twin, the evaluation one window
    # at a time with the reference: equal up to the rounding of sums taken in another order.
    post, expected = np.asarray(engine.post), outcome.scores[first:]
    assert post == pytest.approx(expected, abs=1e-9)
    assert engine.flags == outcome.decisions[first:].tolist()
    assert stats.anomalous_windows == int(outcome.decisions.sum()) > 0
