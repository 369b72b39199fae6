"""The NAB command on a corpus shaped unlike the shared one (issue 3: "any NAB-format corpus").

The shared corpus is regular 5-minute float data. The categories kept out of it are not: hourly rows
with missing days, irregular sampling, integer counts with zeros, and any real corpus can hold a flat
line, values near 1e12 or a clock that steps back. Every series here is synthetic (made below), with one
obvious injected anomaly per labelled file, so the assertions are about the command working and finding
the obvious, not about a tuned score.
"""

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from tests.training.test_evaluate import SHARED_PROFILES, read_result
from training import evaluate

START = datetime(2015, 3, 1)


def _stamps(steps_s: np.ndarray) -> list[str]:
    return [(START + timedelta(seconds=float(s))).strftime("%Y-%m-%d %H:%M:%S") for s in np.cumsum(steps_s)]


def _irregular_speed(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Traffic-like: 5-20 minute gaps, a few outages of hours, integer speeds; a 20-row jam."""
    n = 2000
    steps = rng.choice([300, 300, 300, 600, 900, 1200], size=n).astype(float)
    steps[rng.integers(1, n, 3)] += 3600 * 6
    day = np.clip(np.sin(2 * np.pi * np.cumsum(steps) / 86400), 0, None)
    values = np.round(60 - 15 * day + 3 * rng.standard_normal(n))
    at = 1400
    values[at : at + 20] = np.round(8 + rng.standard_normal(20))
    return steps, values, at


def _hourly_price(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Ad-exchange-like: hourly with missing days, small prices with 6 decimals; a 6-hour tripling."""
    n = 1600
    steps = np.full(n, 3600.0)
    steps[rng.integers(1, n, 5)] += 86400 * 2
    day = np.sin(2 * np.pi * np.cumsum(steps) / 86400)
    values = np.round(np.abs(0.4 + 0.1 * day + 0.02 * rng.standard_normal(n)), 6)
    at = 1100
    values[at : at + 6] *= 3.0
    return steps, values, at


def _counts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Tweet-count-like: 5-minute Poisson counts with zeros and ordinary bursts; a 12-row storm."""
    n = 5000
    steps = np.full(n, 300.0)
    rate = 3 + 5 * np.sin(2 * np.pi * np.cumsum(steps) / 86400) ** 2
    values = rng.poisson(rate).astype(float)
    values[rng.integers(1, n, 20)] += rng.integers(5, 15, 20)
    at = 3500
    values[at : at + 12] += 150
    return steps, values, at


def _huge(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Byte counters near 1e12 (float32 keeps ~7 digits of them); a jump of 40 standard deviations."""
    n = 1500
    values = 1e12 + 1e9 * rng.standard_normal(n)
    at = 1100
    values[at : at + 5] += 4e10
    return np.full(n, 300.0), values, at


def _clock_steps_back(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Negative integer levels, and a clock that goes back 55 minutes once (like NAB's DST hour)."""
    n = 1500
    steps = np.full(n, 300.0)
    steps[700] = -3300.0
    values = -50 + rng.integers(-2, 3, n).astype(float)
    at = 1000
    values[at : at + 5] = -10
    return steps, values, at


LABELLED = {
    "irregular/speed.csv": _irregular_speed,
    "hourly/price.csv": _hourly_price,
    "counts/storm.csv": _counts,
    "odd/huge.csv": _huge,
    "odd/clock_steps_back.csv": _clock_steps_back,
}
FLAT = "odd/flat.csv"


def write_corpus(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2026)
    series: dict[str, np.ndarray] = {}
    windows: dict[str, list[list[str]]] = {}
    for name, make in LABELLED.items():
        steps, values, at = make(rng)
        stamps = _stamps(steps)
        # Rows as NAB writes them; repr keeps every digit of the float64 value.
        _write(root / "data" / name, stamps, [repr(float(v)) for v in values])
        windows[name] = [[stamps[at - 30] + ".000000", stamps[at + 30] + ".000000"]]
        series[name] = values
    flat = np.zeros(1000)
    _write(root / "data" / FLAT, _stamps(np.full(flat.size, 300.0)), ["0"] * flat.size)
    windows[FLAT] = []
    series[FLAT] = flat
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "config").mkdir()
    shutil.copy(SHARED_PROFILES, root / "config" / "profiles.json")
    return series


def _write(path: Path, stamps: list[str], values: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True)))


def _column(path: Path) -> list[str]:
    return [line.split(",", 1)[0] for line in path.read_text().splitlines()[1:]]


def test_nab_command_handles_corpora_unlike_the_shared_one(tmp_path, capsys):
    series = write_corpus(tmp_path / "corpus")
    out = tmp_path / "results"

    code = evaluate.main(["nab", "--corpus", str(tmp_path / "corpus"), "--out", str(out), "--workers", "1"])

    assert code == 0
    printed = capsys.readouterr().out
    assert "NAB reward_low_FN_rate: " in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["untrained"] == {}
    assert summary["files"] == len(series)
    assert summary["rows"] == sum(v.size for v in series.values())
    for name, values in series.items():
        header, body = read_result(out / name)
        assert header == ["timestamp", "value", "anomaly_score"]
        assert body.shape == (values.size, 2), name
        np.testing.assert_allclose(body[:, 0], values, rtol=1e-12, err_msg=name)
        assert np.all((body[:, 1] >= 0) & (body[:, 1] <= 1)), name
        # The input's own timestamps, in its order (the clock that steps back is re-stamped only inside).
        assert _column(out / name) == _column(tmp_path / "corpus" / "data" / name), name
    # A flat line is nothing to report, whatever its level.
    _, flat = read_result(out / FLAT)
    assert flat[:, 1].max() < 0.5
    # Every injected anomaly is found at the deployed decision level, with few false alarms.
    fixed = summary["fixed_threshold"]["postprocessed"]
    assert fixed["windows_total"] == len(LABELLED)
    assert fixed["windows_hit"] == len(LABELLED)
    assert fixed["false_alarms"] <= len(LABELLED)
