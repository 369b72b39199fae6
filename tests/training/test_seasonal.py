"""Time-based seasonal settings resolved to rows (training/seasonal.py) and their path through train.py."""

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import ModelError
from greengrass_components.anomaly_detector.postprocess import PostprocessConfig
from tests.training.train_helpers import write_csv
from training.data import load_csv
from training.errors import ConfigError
from training.evaluate import NAB_HYPERPARAMETERS, NAB_POSTPROCESS, NAB_POSTPROCESS_BY_TIME
from training.seasonal import (
    MAX_ROWS_PER_PERIOD,
    MIN_ROWS_PER_PERIOD,
    SamplingInterval,
    resolve_edge_postprocess,
    sampling_interval,
)
from training.train import main, parse_args, train

DAY = 86400
NOW = datetime(2026, 11, 24, 20, 15, 0, tzinfo=UTC)
TIME_BASED = {"seasonal_period_s": DAY, "reference_periods": 2, "value_short_fraction": 0.25}


def regular(median_s: float) -> SamplingInterval:
    return SamplingInterval(median_s=median_s, regular_share=1.0, n_intervals=100)


def stamps(seconds: list[float] | np.ndarray) -> np.ndarray:
    base = np.datetime64("2024-01-01T00:00:00", "us")
    return base + (np.asarray(seconds, dtype=np.float64) * 1e6).astype("timedelta64[us]")


# --- sampling_interval -------------------------------------------------------------------------------


def test_sampling_interval_is_the_median_step_pooled_within_files_only():
    five_min = stamps(np.arange(10) * 300.0)
    # A second file a year later: the gap between the files must not count as an interval.
    later = stamps(np.arange(5) * 300.0 + 365 * DAY)

    interval = sampling_interval([five_min, later])

    assert interval == SamplingInterval(median_s=300.0, regular_share=1.0, n_intervals=9 + 4)


def test_sampling_interval_counts_gaps_and_a_dst_step_back_as_irregular_but_keeps_the_median():
    seconds = [*(np.arange(8) * 300.0), 7 * 300.0 - 3600.0 + 300.0, *(np.arange(1, 4) * 300.0 + 9000.0)]
    interval = sampling_interval([stamps(seconds)])

    assert interval.median_s == 300.0
    # 11 intervals: 7 of 300 s, one step back, one 2-hour gap, 2 of 300 s.
    assert interval.n_intervals == 11
    assert interval.regular_share == pytest.approx(9 / 11)


def test_jittered_sampling_is_regular_but_event_driven_sampling_is_not():
    rng = np.random.default_rng(3)
    jittered = stamps(np.cumsum(rng.uniform(200.0, 400.0, 600)))  # 5 min +- 100 s
    # Event-driven readings, 10 s to an hour apart (log-uniform): no typical step.
    bursts = stamps(np.cumsum(np.exp(rng.uniform(np.log(10.0), np.log(3600.0), 600))))

    on = resolve_edge_postprocess(TIME_BASED, sampling_interval([jittered]))
    off = resolve_edge_postprocess(TIME_BASED, sampling_interval([bursts]))

    assert on.status == "resolved"
    assert on.edge_postprocess["seasonal_lag"] in range(282, 295)
    assert re.fullmatch(
        r"off: irregular sampling: 1\d% of the intervals within 50% of the median \d+(\.\d+)? s \(need 50%\)",
        off.status,
    ), off.status
    assert off.edge_postprocess["seasonal_lag"] == 0


def test_sampling_interval_of_single_rows_is_unknown():
    assert sampling_interval([stamps([0.0]), stamps([5.0])]) == SamplingInterval(None, 0.0, 0)


# --- resolve_edge_postprocess ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("median_s", "rows"),
    [
        (300.0, (288, 576, 72)),  # NAB's 5-minute rows: exactly the fixed round-3 setting
        (1800.0, (48, 96, 12)),  # 30 minutes (nyc_taxi)
        (3600.0, (24, 48, 6)),  # hourly (realAdExchange, ambient_temperature_system_failure)
        (4800.0, (18, 36, 5)),  # 0.25 * 18 = 4.5 rounds half up, not to even
        (420.0, (206, 412, 52)),  # 86400 / 420 = 205.7
    ],
)
def test_a_day_resolves_to_the_rows_of_one_day(median_s, rows):
    settings = {"method": "likelihood", "suppress_rows": 400, **TIME_BASED}

    resolved = resolve_edge_postprocess(settings, regular(median_s))

    assert resolved.status == "resolved"
    assert resolved.seasonal_lag == rows[0]
    assert resolved.edge_postprocess == {
        "method": "likelihood",
        "suppress_rows": 400,
        "seasonal_lag": rows[0],
        "reference_window": rows[1],
        "value_short_window": rows[2],
    }
    assert settings["seasonal_period_s"] == DAY  # the input is not modified


def test_the_nab_setting_on_five_minute_rows_is_the_old_fixed_row_setting():
    # Round 3's NAB_POSTPROCESS literal, as scored in docs/detection.md (69.65 / 64.35 / 73.84), plus the
    # damping's re-arm ratio, which scores the same on the shared corpus.
    round3 = {
        "method": "likelihood",
        "short_window": 10,
        "long_window": 1000,
        "long_fraction": 0.5,
        "long_window_max": 8000,
        "warmup": 100,
        "log_scores": False,
        "min_std": 0.1,
        "half_log10": 5.0,
        "suppress_level": 0.5,
        "suppress_rows": 400,
        "suppress_factor": 0.0,
        "suppress_rearm_ratio": 3.0,
        "spatial_tolerance": 0.05,
        "record_window": 100,
        "record_history": 8000,
        "record_min_history": 1000,
        "seasonal_lag": 288,
        "value_short_window": 72,
        "reference_window": 576,
    }
    assert dict(NAB_POSTPROCESS) == round3
    assert json.loads(NAB_HYPERPARAMETERS["edge_postprocess"]) == NAB_POSTPROCESS_BY_TIME
    assert resolve_edge_postprocess(NAB_POSTPROCESS_BY_TIME, regular(300.0)).edge_postprocess == round3
    # The device refuses unknown keys: the resolved form is a valid edge config, the time-based one is not.
    assert PostprocessConfig.from_json(json.dumps(NAB_POSTPROCESS)).seasonal_lag == 288
    with pytest.raises(
        ModelError, match=re.escape("edge_postprocess has unknown keys: ['reference_periods'")
    ):
        PostprocessConfig.from_json(json.dumps(NAB_POSTPROCESS_BY_TIME))


@pytest.mark.parametrize("median_s", [300.0, 1800.0, 3600.0, 60.0, 20000.0, 1.0])
def test_every_resolution_is_an_edge_config_the_device_accepts(median_s):
    resolved = resolve_edge_postprocess(NAB_POSTPROCESS_BY_TIME, regular(median_s))

    config = PostprocessConfig.from_json(json.dumps(resolved.edge_postprocess))

    assert config.seasonal_lag == resolved.seasonal_lag


def test_row_values_pass_through_when_only_the_period_is_time_based():
    resolved = resolve_edge_postprocess(
        {"seasonal_period_s": DAY, "reference_window": 100, "value_short_window": 9}, regular(3600.0)
    )

    assert resolved.edge_postprocess == {"seasonal_lag": 24, "reference_window": 100, "value_short_window": 9}


def test_settings_without_time_keys_pass_through_unchanged():
    settings = {"method": "likelihood", "seasonal_lag": 100, "reference_window": 200}

    resolved = resolve_edge_postprocess(settings, regular(3600.0))

    assert resolved.status == "row-based"
    assert resolved.edge_postprocess == settings
    assert resolved.seasonal_lag is None


@pytest.mark.parametrize(
    ("median_s", "lag"),
    [
        (DAY / MIN_ROWS_PER_PERIOD, MIN_ROWS_PER_PERIOD),
        (DAY / MAX_ROWS_PER_PERIOD, MAX_ROWS_PER_PERIOD),
    ],
)
def test_the_row_bounds_are_inclusive(median_s, lag):
    assert resolve_edge_postprocess(TIME_BASED, regular(median_s)).seasonal_lag == lag


@pytest.mark.parametrize(
    ("interval", "reason"),
    [
        (regular(DAY / (MIN_ROWS_PER_PERIOD - 1)), "period 86400 s is 7 rows of 12342.9 s, fewer than 8"),
        (
            regular(DAY / (MAX_ROWS_PER_PERIOD + 1)),
            "period 86400 s is 10001 rows of 8.63914 s, more than 10000",
        ),
        (regular(DAY), "period 86400 s is 1 rows of 86400 s, fewer than 8"),
        (SamplingInterval(None, 0.0, 0), "fewer than 2 training rows, no sampling interval"),
        (SamplingInterval(0.0, 1.0, 10), "median sampling interval 0 s is not positive"),
        (
            SamplingInterval(300.0, 0.49, 10),
            "irregular sampling: 49% of the intervals within 50% of the median 300 s (need 50%)",
        ),
    ],
)
def test_data_that_cannot_carry_the_period_switches_the_seasonal_check_off(interval, reason):
    settings = {"spatial_tolerance": 0.05, **TIME_BASED}

    resolved = resolve_edge_postprocess(settings, interval)

    assert resolved.status == f"off: {reason}"
    assert resolved.seasonal_lag == 0
    # Off, never clamped; the windows are not written (the device defaults apply, unused without a lag).
    assert resolved.edge_postprocess == {"spatial_tolerance": 0.05, "seasonal_lag": 0}
    assert PostprocessConfig.from_json(json.dumps(resolved.edge_postprocess)).seasonal_lag == 0


def test_the_resolution_record_names_period_interval_and_outcome():
    interval = SamplingInterval(1800.0, 0.97, 50)

    record = resolve_edge_postprocess(TIME_BASED, interval).as_dict()

    assert record == {
        "seasonal_period_s": 86400.0,
        "median_interval_s": 1800.0,
        "regular_share": 0.97,
        "seasonal_lag": 48,
        "status": "resolved",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"seasonal_lag": 288, "seasonal_period_s": DAY},
            "edge_postprocess gives both seasonal_lag (rows) and seasonal_period_s (time-based); give one",
        ),
        (
            {"seasonal_period_s": DAY, "reference_window": 576, "reference_periods": 2},
            "gives both reference_window (rows) and reference_periods (time-based); give one",
        ),
        (
            {"seasonal_period_s": DAY, "value_short_window": 72, "value_short_fraction": 0.25},
            "gives both value_short_window (rows) and value_short_fraction (time-based); give one",
        ),
        (
            {"seasonal_lag": 288, "reference_periods": 2},
            "edge_postprocess reference_periods is relative to seasonal_period_s, which is missing",
        ),
        (
            {"value_short_fraction": 0.25},
            "edge_postprocess value_short_fraction is relative to seasonal_period_s, which is missing",
        ),
        (
            {"seasonal_period_s": DAY, "reference_periods": 2, "level_windows": [12]},
            "reference_periods cannot be combined with level_windows / variance_window",
        ),
        (
            {"seasonal_period_s": DAY, "reference_periods": 2, "variance_window": 48},
            "reference_periods cannot be combined with level_windows / variance_window",
        ),
        ({"seasonal_period_s": 0}, "edge_postprocess seasonal_period_s must be a positive number, got 0"),
        ({"seasonal_period_s": -5.0}, "seasonal_period_s must be a positive number, got -5.0"),
        ({"seasonal_period_s": "86400"}, "seasonal_period_s must be a positive number, got '86400'"),
        ({"seasonal_period_s": True}, "seasonal_period_s must be a positive number, got True"),
        ({"seasonal_period_s": math.inf}, "seasonal_period_s must be a positive number, got inf"),
        (
            {"seasonal_period_s": DAY, "reference_periods": None},
            "edge_postprocess reference_periods must be a positive number, got None",
        ),
        (
            {"seasonal_period_s": DAY, "value_short_fraction": 1.5},
            "edge_postprocess value_short_fraction must be in (0, 1], got 1.5",
        ),
    ],
)
def test_contradictory_or_invalid_time_keys_are_refused(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_edge_postprocess(settings, regular(300.0))


# --- through train.py --------------------------------------------------------------------------------


def hourly_csv(path: Path, n_rows: int, step_s: int = 3600) -> Path:
    start = np.datetime64("2024-03-01T00:00:00")
    t = np.arange(n_rows)
    values = 10.0 + np.sin(2 * np.pi * t * step_s / DAY) + 0.01 * np.cos(t)
    rows = [
        [str(start + np.timedelta64(int(i * step_s), "s")).replace("T", " "), f"{v:.6f}"]
        for i, v in zip(t, values, strict=True)
    ]
    return write_csv(path, ["timestamp", "value"], rows)


def test_train_writes_the_rows_of_one_day_of_the_training_rows_into_the_model(tmp_path):
    data = hourly_csv(tmp_path / "hourly.csv", 400)
    argv = ["--train", str(tmp_path), "--model_dir", str(tmp_path / "m"), "--train_rows", "200"]
    config = parse_args([*argv, "--edge_postprocess", NAB_HYPERPARAMETERS["edge_postprocess"]], environ={})

    trained = train(config, [load_csv(data)], now=NOW)

    props = {p.key: p.value for p in trained.proto.metadata_props}
    post = json.loads(props["edge_postprocess"])
    assert post == {
        **{k: v for k, v in NAB_POSTPROCESS_BY_TIME.items() if k not in TIME_BASED},
        "seasonal_lag": 24,
        "reference_window": 48,
        "value_short_window": 6,
    }
    assert PostprocessConfig.from_json(props["edge_postprocess"]).seasonal_lag == 24
    assert json.loads(props["training_metrics"])["edge_postprocess_seasonal"] == {
        "seasonal_period_s": 86400.0,
        "median_interval_s": 3600.0,
        "regular_share": 1.0,
        "seasonal_lag": 24,
        "status": "resolved",
    }


def test_train_resolves_from_the_training_rows_only(tmp_path):
    # 5-minute training rows, then hourly rows: only the leading (training) rows decide.
    five = hourly_csv(tmp_path / "a.csv", 300, step_s=300)
    lines = five.read_text().splitlines()
    last = np.datetime64(lines[-1].split(",")[0].replace(" ", "T"))
    tail = [f"{str(last + np.timedelta64(3600 * (i + 1), 's')).replace('T', ' ')},1.0" for i in range(900)]
    five.write_text("\n".join([*lines, *tail]) + "\n")
    argv = ["--train", str(tmp_path), "--model_dir", str(tmp_path / "m"), "--train_rows", "300"]
    config = parse_args([*argv, "--edge_postprocess", json.dumps(TIME_BASED)], environ={})

    trained = train(config, [load_csv(five)], now=NOW)

    post = json.loads({p.key: p.value for p in trained.proto.metadata_props}["edge_postprocess"])
    assert post == {"seasonal_lag": 288, "reference_window": 576, "value_short_window": 72}


def test_row_based_edge_postprocess_is_written_unchanged_without_a_resolution_record(tmp_path):
    data = hourly_csv(tmp_path / "hourly.csv", 200)
    settings = {"method": "likelihood", "seasonal_lag": 288, "reference_window": 576}
    argv = ["--train", str(tmp_path), "--model_dir", str(tmp_path / "m")]
    config = parse_args([*argv, "--edge_postprocess", json.dumps(settings)], environ={})

    trained = train(config, [load_csv(data)], now=NOW)

    props = {p.key: p.value for p in trained.proto.metadata_props}
    assert json.loads(props["edge_postprocess"]) == settings
    assert "edge_postprocess_seasonal" not in json.loads(props["training_metrics"])


def test_main_refuses_a_row_lag_and_a_period_before_reading_any_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path / "output"))
    both = json.dumps({"seasonal_lag": 288, "seasonal_period_s": DAY})

    # The training path does not exist: the hyperparameter is refused before the data is looked at.
    code = main(
        ["--train", str(tmp_path / "absent"), "--model_dir", str(tmp_path / "m"), "--edge_postprocess", both]
    )

    assert code == 2
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure == (
        "ConfigError: edge_postprocess gives both seasonal_lag (rows) and seasonal_period_s (time-based); "
        "give one\n"
    )
    assert not (tmp_path / "m" / "model.onnx").exists()
