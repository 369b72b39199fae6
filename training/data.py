"""Load sensor CSVs (NAB, SKAB or any ``timestamp + numeric columns`` file) and cut sliding windows.

A CSV becomes a :class:`Series`: parsed timestamps, a float64 ``[n_rows, n_channels]`` array and the
sha256 of the file's bytes. Label columns are dropped so that a labelled benchmark file can be used for
training without leaking its labels into the model.
"""

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np

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

LABEL_COLUMNS: Final = frozenset({"anomaly", "changepoint", "label"})
TIMESTAMP_COLUMNS: Final = ("timestamp", "datetime", "time", "date", "ts")
_MISSING_CELLS: Final = frozenset({"", "nan", "na", "null", "none"})
_DELIMITERS: Final = (",", ";", "\t")
# Epoch seconds of 9999-12-31, datetime's last day: a larger number is no epoch-seconds timestamp.
_EPOCH_SECONDS_LIMIT: Final = 253_402_300_800


@dataclass(frozen=True)
class Series:
    """One CSV file's worth of sensor data."""

    source: str
    timestamps: np.ndarray  # datetime64[us], shape [n_rows], naive UTC
    values: np.ndarray  # float64, shape [n_rows, n_channels], missing cells filled
    channels: tuple[str, ...]
    sha256: str  # of the file's bytes, so `sha256sum file` reproduces it
    n_missing_filled: int = 0

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])


# The largest finite float32: the model computes in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_csv(path: Path, channels: Sequence[str] | None = None) -> Series:
    """Read one CSV file; see :func:`parse_csv` for how columns are chosen."""
    raw = path.read_bytes()
    return parse_csv(raw, source=path.name, channels=channels)


def parse_csv(raw: bytes, *, source: str, channels: Sequence[str] | None = None) -> Series:
    """Parse CSV bytes into a :class:`Series`.

    The delimiter (``,``, ``;`` or tab) is taken from the header line. The timestamp column is the one named
    like a timestamp (``timestamp``, ``datetime``, ...) or else the first column whose first value is an
    ISO-8601 date. Channels are ``channels`` if given, otherwise every numeric column that is neither the
    timestamp nor a label column (``anomaly``, ``changepoint``, ``label``). Empty / ``nan`` cells are missing
    and filled from the previous row (the first rows from the next value).
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedCsvError(_decode_error(raw, exc, source)) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise EmptyDataError(f"{source}: the file is empty")
    delimiter = max(_DELIMITERS, key=lines[0].count)
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [name.strip() for name in rows[0]]
    body = rows[1:]
    if not body:
        raise EmptyDataError(f"{source}: the file has a header but no data rows")
    for line_no, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise MalformedCsvError(
                f"{source} line {line_no}: {len(row)} fields, the header has {len(header)}"
            )

    ts_index = _timestamp_column(header, body, source)
    timestamps = _parse_timestamps([row[ts_index] for row in body], header[ts_index], source)
    chosen = _choose_channels(header, body, ts_index, channels, source)
    columns = [_parse_numeric(body, header.index(name), name, source) for name in chosen]
    values = np.column_stack(columns) if columns else np.empty((len(body), 0))
    n_missing = int(np.isnan(values).sum())
    return Series(
        source=source,
        timestamps=timestamps,
        values=_fill_missing(values),
        channels=tuple(chosen),
        sha256=hashlib.sha256(raw).hexdigest(),
        n_missing_filled=n_missing,
    )


def find_csv_files(path: Path) -> list[Path]:
    """``path`` itself if it is a file, else every ``*.csv`` below it, sorted for a stable fingerprint."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"training data path {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        raise EmptyDataError(f"no .csv file in {path}")
    return files


def load_training_data(path: Path, channels: Sequence[str] | None = None) -> list[Series]:
    """Load every CSV of a training channel; all files must yield the same channels in the same order."""
    series = [load_csv(file, channels) for file in find_csv_files(path)]
    first = series[0]
    for other in series[1:]:
        if other.channels != first.channels:
            raise ChannelMismatchError(
                f"{other.source} has channels {list(other.channels)}, "
                f"{first.source} has {list(first.channels)}; pass --channels to pick common ones"
            )
    return series


def manifest(series: Sequence[Series]) -> str:
    """The training files as a ``sha256sum`` listing: ``<sha256>  <name>`` lines sorted by name."""
    return "".join(f"{s.sha256}  {s.source}\n" for s in sorted(series, key=lambda s: s.source))


def fingerprint(series: Sequence[Series]) -> str:
    """sha256 identifying the training files.

    One file: the file's own sha256. Several: the sha256 of their :func:`manifest`, which changes when
    any file is added, removed or edited.
    """
    if len(series) == 1:
        return series[0].sha256
    return hashlib.sha256(manifest(series).encode()).hexdigest()


def leading_rows(series: Series, *, train_rows: int | None, train_fraction: float | None) -> Series:
    """The first rows of ``series``: ``train_rows`` of them, or ``train_fraction`` of them, or all."""
    if train_rows is not None and train_fraction is not None:
        raise ConfigError("give train_rows or train_fraction, not both")
    if train_rows is not None:
        keep = train_rows
    elif train_fraction is not None:
        keep = math.floor(series.n_rows * train_fraction)
    else:
        return series
    return replace(series, timestamps=series.timestamps[:keep], values=series.values[:keep])


def sliding_windows(values: np.ndarray, window_length: int) -> np.ndarray:
    """All windows of ``window_length`` consecutive rows: ``[n_rows - window_length + 1, window_length, c]``.

    Returns a read-only view (no copy); an array shorter than one window gives zero windows.
    """
    if values.ndim != 2:
        raise ValueError(f"values must be [n_rows, n_channels], got shape {values.shape}")
    if values.shape[0] < window_length:
        return np.empty((0, window_length, values.shape[1]), dtype=values.dtype)
    view = np.lib.stride_tricks.sliding_window_view(values, window_length, axis=0)
    return view.transpose(0, 2, 1)


def _timestamp_column(header: list[str], body: list[list[str]], source: str) -> int:
    lowered = [name.lower() for name in header]
    for name in TIMESTAMP_COLUMNS:
        if name in lowered:
            return lowered.index(name)
    for index, cell in enumerate(body[0]):
        if _parse_float(cell) is None and _parse_datetime(cell) is not None:
            return index
    raise MissingTimestampError(
        f"{source}: no timestamp column (expected one named {', '.join(TIMESTAMP_COLUMNS)} "
        f"or holding ISO-8601 dates); columns are {header}"
    )


def _parse_timestamps(cells: list[str], column: str, source: str) -> np.ndarray:
    parsed: list[datetime] = []
    for line_no, cell in enumerate(cells, start=2):
        value = _parse_datetime(cell)
        if value is None:
            raise InvalidTimestampError(
                f"{source} line {line_no}: {cell!r} in column {column!r} is not a timestamp"
                + _epoch_hint(cell)
            )
        parsed.append(value)
    return np.array(parsed, dtype="datetime64[us]")


def _decode_error(raw: bytes, exc: UnicodeDecodeError, source: str) -> str:
    """Where the first byte that is not UTF-8 sits, as a line number a person can open the file at."""
    line_no = raw.count(b"\n", 0, exc.start) + 1
    return (
        f"{source} line {line_no}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8; "
        "save the file as UTF-8 (a spreadsheet's 'CSV UTF-8'), e.g. iconv -f cp1252 -t utf-8"
    )


def _parse_datetime(cell: str) -> datetime | None:
    text = cell.strip()
    number = _parse_float(text)
    if number is not None and math.isfinite(number):
        # Epoch seconds, as the sensor message contract allows.
        try:
            return datetime.fromtimestamp(number, tz=UTC).replace(tzinfo=None)
        except (ValueError, OverflowError, OSError):
            # Beyond datetime's years 1-9999 (epoch milliseconds, for one, land near year 55000):
            # not a timestamp; the caller names the file, line and cell.
            return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _epoch_hint(cell: str) -> str:
    number = _parse_float(cell.strip())
    if number is None or not _EPOCH_SECONDS_LIMIT <= abs(number) < 1000 * _EPOCH_SECONDS_LIMIT:
        return ""
    return " (too large for epoch seconds; epoch milliseconds? give seconds or ISO 8601)"


def _choose_channels(
    header: list[str], body: list[list[str]], ts_index: int, channels: Sequence[str] | None, source: str
) -> list[str]:
    if channels is not None:
        missing = [name for name in channels if name not in header]
        if missing:
            raise MissingChannelError(f"{source}: channels {missing} are not columns of {header}")
        if header[ts_index] in channels:
            raise ConfigError(f"{source}: {header[ts_index]!r} is the timestamp column, not a channel")
        labels = [name for name in channels if name.lower() in LABEL_COLUMNS]
        if labels:
            # Feeding the benchmark's answer to the model would make every evaluation meaningless.
            raise ConfigError(f"{source}: {labels} are label columns, not sensor channels")
        return list(channels)
    chosen = []
    for index, name in enumerate(header):
        if index == ts_index or name.lower() in LABEL_COLUMNS:
            continue
        cells = [row[index].strip() for row in body]
        present = [cell for cell in cells if cell.lower() not in _MISSING_CELLS]
        # A wholly textual column (an id, a unit) is not a sensor; a partly textual one is an error, raised
        # by _parse_numeric, because silently dropping a sensor would change the model's input signature.
        if present and all(_parse_float(cell) is None for cell in present):
            continue
        chosen.append(name)
    if not chosen:
        raise MissingChannelError(f"{source}: no numeric sensor column among {header}")
    return chosen


def _parse_numeric(body: list[list[str]], index: int, name: str, source: str) -> np.ndarray:
    column = np.empty(len(body), dtype=np.float64)
    for row_no, row in enumerate(body):
        cell = row[index].strip()
        if cell.lower() in _MISSING_CELLS:
            column[row_no] = np.nan
            continue
        number = _parse_float(cell)
        if number is None or not math.isfinite(number):
            raise NonNumericValueError(
                f"{source} line {row_no + 2}: {cell!r} in column {name!r} is not a finite number"
            )
        if abs(number) > FLOAT32_MAX:
            # The model and the device read float32 (the device refuses such a value as non_finite).
            raise NonNumericValueError(
                f"{source} line {row_no + 2}: {cell!r} in column {name!r} is beyond float32's range"
            )
        column[row_no] = number
    if np.isnan(column).all():
        raise AllMissingChannelError(f"{source}: column {name!r} has no values (all empty or NaN)")
    return column


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _fill_missing(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs per column, then back-fill the leading ones (each column has a value somewhere)."""
    filled = values.copy()
    for column in filled.T:
        missing = np.isnan(column)
        if not missing.any():
            continue
        index = np.where(~missing, np.arange(column.size), 0)
        np.maximum.accumulate(index, out=index)
        column[:] = column[index]
        first_valid = int(np.argmax(~missing))
        column[:first_valid] = column[first_valid]
    return filled
