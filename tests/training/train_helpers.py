"""Shared helpers for the training tests (plain functions, not fixtures, so nothing is implicit)."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

DATA_DIR = Path(__file__).parent / "data"
NAB_SLICE = DATA_DIR / "machine_temperature_head2500.csv"
# Index of the first row inside NAB's first labelled anomaly window (2013-12-10 06:25:00).
NAB_FIRST_LABELLED_ROW = 2126


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def onnx_scores(sess: ort.InferenceSession, windows: np.ndarray) -> np.ndarray:
    (scores,) = sess.run(["score"], {"window": np.asarray(windows, dtype=np.float32)})
    return np.asarray(scores)


def synthetic_channels(n_rows: int, seed: int = 7) -> np.ndarray:
    """Three differently scaled, correlated channels: a slow cycle, its lagged echo, and a noisy level."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=np.float64)
    cycle = np.sin(2 * np.pi * t / 150.0)
    return np.column_stack(
        [
            20.0 + 5.0 * cycle + rng.normal(0, 0.2, n_rows),
            1000.0 + 300.0 * np.roll(cycle, 10) + rng.normal(0, 5.0, n_rows),
            0.05 + 0.01 * rng.normal(0, 1, n_rows).cumsum() / np.sqrt(n_rows),
        ]
    )


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    lines = [delimiter.join(header), *(delimiter.join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def timestamps(n_rows: int) -> list[str]:
    start = np.datetime64("2020-02-08T13:30:00")
    return [str(start + np.timedelta64(i, "s")).replace("T", " ") for i in range(n_rows)]
