import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.training.train_helpers import NAB_SLICE, timestamps, write_csv
from training.data import (
    Series,
    find_csv_files,
    fingerprint,
    leading_rows,
    load_csv,
    load_training_data,
    parse_csv,
    sliding_windows,
)
from training.errors import (
    AllMissingChannelError,
    ChannelMismatchError,
    ConfigError,
    EmptyDataError,
    InvalidTimestampError,
    MalformedCsvError,
    MissingChannelError,
    MissingTimestampError,
    NonNumericValueError,
)

SKAB_HEADER = ["datetime", "Accelerometer1RMS", "Current", "Volume Flow RateRMS", "anomaly", "changepoint"]


def skab_like(path: Path, n_rows: int = 5) -> Path:
    rows = [
        [ts, f"0.{i}", f"{2 + i}.5", f"{120 + i}", "0.0", "1.0" if i == 2 else "0.0"]
        for i, ts in enumerate(timestamps(n_rows))
    ]
    return write_csv(path, SKAB_HEADER, rows, delimiter=";")


def test_nab_file_gives_timestamps_values_and_file_sha256():
    series = load_csv(NAB_SLICE)

    assert series.channels == ("value",)
    assert series.values.shape == (2500, 1)
    assert series.values.dtype == np.float64
    assert series.values[0, 0] == pytest.approx(73.96732207)
    assert series.timestamps[0] == np.datetime64("2013-12-02T21:15:00")
    assert series.timestamps[-1] == np.datetime64("2013-12-11T13:30:00")
    assert series.sha256 == hashlib.sha256(NAB_SLICE.read_bytes()).hexdigest()
    assert series.source == NAB_SLICE.name
    assert series.n_missing_filled == 0


def test_skab_style_semicolon_file_drops_label_columns(tmp_path):
    series = load_csv(skab_like(tmp_path / "1.csv"))

    assert series.channels == ("Accelerometer1RMS", "Current", "Volume Flow RateRMS")
    np.testing.assert_array_equal(series.values[2], [0.2, 4.5, 122.0])
    assert series.timestamps[1] == np.datetime64("2020-02-08T13:30:01")


def test_explicit_channels_select_and_order_columns(tmp_path):
    series = load_csv(skab_like(tmp_path / "1.csv"), channels=["Current", "Accelerometer1RMS"])

    assert series.channels == ("Current", "Accelerometer1RMS")
    np.testing.assert_array_equal(series.values[0], [2.5, 0.0])


def test_textual_column_is_not_a_channel_and_timestamp_found_by_content(tmp_path):
    path = write_csv(
        tmp_path / "a.csv",
        ["when", "unit", "temp"],
        [["2024-01-01T00:00:00Z", "C", "1.5"], ["2024-01-01T01:00:00+01:00", "C", "2.5"]],
    )
    series = load_csv(path)

    assert series.channels == ("temp",)
    # Both rows are the same instant once converted to UTC.
    assert series.timestamps[0] == series.timestamps[1] == np.datetime64("2024-01-01T00:00:00")


def test_epoch_second_timestamps_are_accepted():
    series = parse_csv(b"timestamp,v\n1700000000,1\n1700000300.5,2\n", source="e.csv")

    assert series.timestamps[0] == np.datetime64("2023-11-14T22:13:20")
    assert series.timestamps[1] == np.datetime64("2023-11-14T22:18:20.500000")


def test_missing_cells_are_filled_forward_then_backward():
    raw = (
        b"timestamp,a,b\n2024-01-01 00:00:00,,1\n2024-01-01 00:05:00,2,NaN\n2024-01-01 00:10:00,3,\n"
        b"2024-01-01 00:15:00,,4\n"
    )
    series = parse_csv(raw, source="m.csv")

    np.testing.assert_array_equal(series.values, [[2, 1], [2, 1], [3, 1], [3, 4]])
    assert series.n_missing_filled == 4


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"", EmptyDataError, "x.csv: the file is empty"),
        (b"timestamp,value\n", EmptyDataError, "x.csv: the file has a header but no data rows"),
        (
            b"timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,abc\n",
            NonNumericValueError,
            "x.csv line 3: 'abc' in column 'value' is not a finite number",
        ),
        (
            b"timestamp,value\n2024-01-01 00:00:00,inf\n",
            NonNumericValueError,
            "x.csv line 2: 'inf' in column 'value' is not a finite number",
        ),
        (
            b"timestamp,a,b\n2024-01-01 00:00:00,1,\n2024-01-01 00:05:00,2,nan\n",
            AllMissingChannelError,
            "x.csv: column 'b' has no values (all empty or NaN)",
        ),
        (b"id,value\nx,1\n", MissingTimestampError, "x.csv: no timestamp column"),
        (
            b"timestamp,value\n2024-01-01 00:00:00,1\nyesterday,2\n",
            InvalidTimestampError,
            "x.csv line 3: 'yesterday' in column 'timestamp' is not a timestamp",
        ),
        (
            b"timestamp,value\n2024-01-01 00:00:00,1,7\n",
            MalformedCsvError,
            "x.csv line 2: 3 fields, the header has 2",
        ),
        (
            b"timestamp,name\n2024-01-01 00:00:00,pump\n",
            MissingChannelError,
            "x.csv: no numeric sensor column",
        ),
        # Epoch milliseconds: datetime.fromtimestamp raises ValueError "year 55840 is out of range".
        (
            b"timestamp,value\n1700000000000,1\n1700000060000,2\n",
            InvalidTimestampError,
            "x.csv line 2: '1700000000000' in column 'timestamp' is not a timestamp "
            "(too large for epoch seconds; epoch milliseconds? give seconds or ISO 8601)",
        ),
        # Beyond any datetime: OverflowError or OSError, depending on the platform.
        (
            b"timestamp,value\n1,1\n1e300,2\n",
            InvalidTimestampError,
            "x.csv line 3: '1e300' in column 'timestamp' is not a timestamp",
        ),
        (
            b"timestamp,value\n-1e12,1\n",
            InvalidTimestampError,
            "x.csv line 2: '-1e12' in column 'timestamp' is not a timestamp",
        ),
        # cp1252 (a spreadsheet's "CSV"): the degree sign is byte 0xb0, not UTF-8.
        (
            "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,2 \u00b0C\n".encode("cp1252"),
            MalformedCsvError,
            "x.csv line 3: byte 0xb0 at offset 60 is not UTF-8; save the file as UTF-8",
        ),
    ],
)
def test_bad_csv_raises_a_specific_error(raw, error, message):
    with pytest.raises(error) as info:
        parse_csv(raw, source="x.csv")
    assert str(info.value).startswith(message)


def test_unknown_requested_channel_is_an_error(tmp_path):
    with pytest.raises(MissingChannelError, match=r"channels \['Pressure'\] are not columns"):
        load_csv(skab_like(tmp_path / "1.csv"), channels=["Current", "Pressure"])


def test_label_or_timestamp_column_cannot_be_a_channel(tmp_path):
    path = skab_like(tmp_path / "1.csv")
    with pytest.raises(ConfigError, match=r"^1.csv: \['anomaly'\] are label columns, not sensor channels$"):
        load_csv(path, channels=["Current", "anomaly"])
    with pytest.raises(ConfigError, match=r"^1.csv: 'datetime' is the timestamp column, not a channel$"):
        load_csv(path, channels=["datetime"])


def test_training_directory_reads_every_csv_sorted_and_checks_channels(tmp_path):
    skab_like(tmp_path / "b.csv")
    (tmp_path / "sub").mkdir()
    skab_like(tmp_path / "sub" / "a.csv")
    (tmp_path / "notes.txt").write_text("not data")

    series = load_training_data(tmp_path)

    assert [s.source for s in series] == ["b.csv", "a.csv"]  # sorted by path: b.csv < sub/a.csv
    write_csv(tmp_path / "c.csv", ["timestamp", "other"], [["2024-01-01 00:00:00", "1"]])
    with pytest.raises(ChannelMismatchError, match=r"c.csv has channels \['other'\]"):
        load_training_data(tmp_path)


def test_no_csv_or_missing_path_is_reported(tmp_path):
    with pytest.raises(EmptyDataError, match=r"no \.csv file in"):
        find_csv_files(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        find_csv_files(tmp_path / "nope")


def test_fingerprint_is_file_sha_for_one_file_and_manifest_sha_for_several():
    a = parse_csv(b"timestamp,v\n2024-01-01,1\n", source="a.csv")
    b = parse_csv(b"timestamp,v\n2024-01-01,2\n", source="b.csv")
    manifest = f"{a.sha256}  a.csv\n{b.sha256}  b.csv\n"

    assert fingerprint([a]) == a.sha256
    assert fingerprint([b, a]) == hashlib.sha256(manifest.encode()).hexdigest()
    assert fingerprint([a, b]) != fingerprint([a, a])


def test_leading_rows_by_count_fraction_or_all():
    series = parse_csv(b"timestamp,v\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(10)), source="r.csv")

    assert leading_rows(series, train_rows=3, train_fraction=None).values[:, 0].tolist() == [0, 1, 2]
    assert leading_rows(series, train_rows=None, train_fraction=0.55).n_rows == 5
    assert leading_rows(series, train_rows=None, train_fraction=None) is series
    with pytest.raises(ConfigError, match="not both"):
        leading_rows(series, train_rows=3, train_fraction=0.5)


def test_sliding_windows_are_consecutive_rows():
    values = np.arange(12, dtype=np.float64).reshape(6, 2)

    windows = sliding_windows(values, 4)

    assert windows.shape == (3, 4, 2)
    np.testing.assert_array_equal(windows[1], values[1:5])
    assert sliding_windows(values, 7).shape == (0, 7, 2)


def test_series_row_count_property():
    series = Series("s", np.array([], dtype="datetime64[us]"), np.zeros((0, 1)), ("v",), "0" * 64)
    assert series.n_rows == 0
