"""Parse sensor messages (contracts §5) into typed samples, in the model's channel order.

Three JSON shapes and one binary one (see greengrass_components/README.md for the schema):
- single: ``{"stream": "s", "timestamp": 1700000000.0, "values": {"value": 71.3}}``
- row batch: ``{"stream": "s", "samples": [{"timestamp": ..., "values": {...}}, ...]}``
- columnar batch: ``{"stream": "s", "timestamps": [...], "values": {"value": [...], ...}}``; parsed with
  numpy in one pass, it is the cheap shape for high-rate sensors.
- binary columnar (``EDG1``): a small header (stream, channel names, sample count) then little-endian
  float64 timestamps and float32 values ``[n, channels]``, read with ``np.frombuffer``: no per-sample
  Python at all. A payload starting with the magic bytes is binary, anything else is JSON.

Every way a message can be wrong raises :class:`MessageError` with a stable ``kind``, so the caller can
count rejects by kind (a health signal) and skip the message without stopping the stream. A message is
accepted or rejected whole.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from .errors import MessageError

# Stable reject kinds (counter keys in the stats and health messages).
NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
BAD_SHAPE = "bad_shape"
BAD_STREAM = "bad_stream"
BAD_TIMESTAMP = "bad_timestamp"
BAD_VALUE = "bad_value"
NON_FINITE = "non_finite"
MISSING_CHANNEL = "missing_channel"
OVERSIZED = "oversized"
OUT_OF_ORDER = "out_of_order"
DUPLICATE_TIMESTAMP = "duplicate_timestamp"
TOO_MANY_STREAMS = "too_many_streams"
BAD_BINARY = "bad_binary"

# Binary columnar message (contracts §5): header, stream name, channel names, then the two arrays.
BINARY_MAGIC = b"EDG1"
BINARY_VERSION = 1
# magic, version (u8), channel count (u8), stream name length (u16), sample count (u32); little-endian.
_BINARY_HEADER = struct.Struct("<4sBBHI")

# The cloud's ingest refuses an event whose stream is not 1-128 characters without control characters
# (lambdas/ingest/events.py MAX_TEXT_LENGTH, _CONTROL_CHARS): such a stream is refused here, where the
# sensor can be told, rather than as events the cloud never accepts (and so never acks).
MAX_STREAM_CHARS = 128
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_MAX_SAMPLES_PER_MESSAGE = 100_000
_NUMBER_TYPES = frozenset({int, float})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sensor reading; ``values`` follow the model's channel order."""

    stream: str
    timestamp: float  # epoch seconds, UTC
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Many readings of one stream: ``timestamps`` [n] (epoch s) and ``values`` [n, n_channels]."""

    stream: str
    timestamps: NDArray[np.float64]
    values: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


# Epoch seconds a timestamp may take: 1970 up to 2^32 s (the year 2106). Outside it is a unit mistake
# (milliseconds read as seconds are ~1.7e12), and it would break the stream: an event time in the year
# 33658 has no ISO-8601 form, and one sample that far ahead makes every later sample "out of order".
MIN_TIMESTAMP_S = 0.0
MAX_TIMESTAMP_S = float(2**32)


def _check_range(value: float, raw: object) -> float:
    if not MIN_TIMESTAMP_S <= value < MAX_TIMESTAMP_S:
        raise MessageError(
            BAD_TIMESTAMP,
            f"timestamp {raw!r} is outside epoch seconds [{MIN_TIMESTAMP_S:.0f}, {MAX_TIMESTAMP_S:.0f}) "
            "(1970-2106; milliseconds or microseconds?)",
        )
    return value


_RANGE_MESSAGE = (
    f"timestamps must be finite epoch seconds in [{MIN_TIMESTAMP_S:.0f}, {MAX_TIMESTAMP_S:.0f}) (1970-2106)"
)


def timestamps_in_range(timestamps: NDArray[np.float64]) -> bool:
    """Every timestamp finite and in range (NaN fails both comparisons)."""
    if timestamps.size == 0:
        return True
    return bool(timestamps.min() >= MIN_TIMESTAMP_S and timestamps.max() < MAX_TIMESTAMP_S)


def parse_timestamp(raw: object) -> float:
    """Epoch seconds (int/float) or ISO-8601 string (naive means UTC) -> epoch seconds."""
    if isinstance(raw, bool):
        raise MessageError(BAD_TIMESTAMP, "timestamp must be epoch seconds or an ISO-8601 string, got bool")
    if isinstance(raw, int | float):
        value = float(raw)
        if not math.isfinite(value):
            raise MessageError(BAD_TIMESTAMP, f"timestamp must be finite, got {raw!r}")
        return _check_range(value, raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise MessageError(BAD_TIMESTAMP, f"timestamp is not ISO-8601: {raw!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _check_range(parsed.timestamp(), raw)
    raise MessageError(
        BAD_TIMESTAMP, f"timestamp must be epoch seconds or an ISO-8601 string, got {type(raw).__name__}"
    )


def check_stream(stream: object) -> str:
    """The stream name if the cloud would accept it, else :class:`MessageError` ``bad_stream``."""
    if not isinstance(stream, str) or not stream:
        raise MessageError(BAD_STREAM, "message needs a non-empty string 'stream' (in it or in its topic)")
    if len(stream) > MAX_STREAM_CHARS or CONTROL_CHARS.search(stream) or not _utf8(stream):
        raise MessageError(
            BAD_STREAM,
            f"stream must be 1-{MAX_STREAM_CHARS} characters of UTF-8 without control characters, "
            f"got {len(stream)} characters: {stream[:80]!r}",
        )
    return stream


def _utf8(text: str) -> bool:
    # json.loads (the IPC SDK's, and our fallback parser) accepts a lone surrogate such as "\ud800"; no event
    # naming it could be encoded (orjson refuses it), so it must never become a stream.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_row_order(stream: str, samples: Sequence[Sample]) -> None:
    """A row batch is refused whole, like a columnar one (contracts §5): never half a batch in the windows."""
    stamps = [sample.timestamp for sample in samples]
    if any(b <= a for a, b in itertools.pairwise(stamps)):
        kind = DUPLICATE_TIMESTAMP if all(b >= a for a, b in itertools.pairwise(stamps)) else OUT_OF_ORDER
        raise MessageError(kind, f"row batch for stream {stream!r} is not strictly increasing in time")


class MessageParser:
    """Turns raw payloads into :class:`Sample` objects for a fixed channel list."""

    def __init__(
        self,
        channels: Sequence[str],
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_samples: int = DEFAULT_MAX_SAMPLES_PER_MESSAGE,
    ) -> None:
        if not channels:
            raise ValueError("channels must not be empty")
        self._channels = tuple(channels)
        self.max_message_bytes = max_message_bytes
        self.max_samples = max_samples

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    def parse(self, payload: bytes | str, *, default_stream: str | None = None) -> list[Sample] | SampleBlock:
        """Parse any message shape; ``default_stream`` (from the topic) fills a missing stream."""
        if len(payload) > self.max_message_bytes:
            # Checked before decoding: a huge payload must not cost a full JSON parse.
            raise MessageError(
                OVERSIZED, f"payload has {len(payload)} bytes, the limit is {self.max_message_bytes}"
            )
        if isinstance(payload, bytes):
            if payload[:4] == BINARY_MAGIC:
                return self.parse_binary(payload, default_stream=default_stream)
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise MessageError(NOT_UTF8, "payload is not valid UTF-8") from None
        else:
            text = payload
        return self.parse_document(_loads(text), default_stream=default_stream)

    def parse_document(
        self, document: object, *, default_stream: str | None = None
    ) -> list[Sample] | SampleBlock:
        """Parse an already-decoded JSON document (the IPC source receives JSON messages as dicts)."""
        try:
            return self._document(document, default_stream)
        except OverflowError:
            # JSON integers are unbounded: 1e400 written out as digits cannot become a float.
            raise MessageError(NON_FINITE, "a number is too large for a float") from None

    def _document(self, document: object, default_stream: str | None) -> list[Sample] | SampleBlock:
        if not isinstance(document, dict):
            raise MessageError(BAD_SHAPE, f"message must be a JSON object, got {type(document).__name__}")
        stream = check_stream(document.get("stream", default_stream))
        if "timestamps" in document:
            return self._columnar(stream, document)
        if "samples" in document:
            samples = document["samples"]
            if not isinstance(samples, list) or not samples:
                raise MessageError(BAD_SHAPE, "'samples' must be a non-empty list")
            if len(samples) > self.max_samples:
                raise MessageError(OVERSIZED, f"{len(samples)} samples, the limit is {self.max_samples}")
            out = []
            for index, item in enumerate(samples):
                if not isinstance(item, dict):
                    raise MessageError(BAD_SHAPE, f"samples[{index}] must be an object")
                out.append(self._sample(stream, item))
            _check_row_order(stream, out)
            return out
        return [self._sample(stream, document)]

    def _sample(self, stream: str, item: Mapping[str, Any]) -> Sample:
        if "timestamp" not in item:
            raise MessageError(BAD_TIMESTAMP, "sample has no 'timestamp'")
        values = item.get("values")
        if not isinstance(values, dict):
            raise MessageError(BAD_SHAPE, "sample needs an object 'values' of channel -> number")
        return self.sample_from_fields(stream, item["timestamp"], values)

    def sample_from_fields(self, stream: str, timestamp: object, values: Mapping[str, object]) -> Sample:
        """Validate one reading given as fields (also used by the CSV replay source)."""
        ts = parse_timestamp(timestamp)
        ordered: list[float] = []
        for channel in self._channels:
            if channel not in values:
                raise MessageError(MISSING_CHANNEL, f"sample has no value for channel {channel!r}")
            raw = values[channel]
            # bool is an int subclass; a sensor sending true/false is a bug, not a 1.0 reading.
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise MessageError(
                    BAD_VALUE, f"channel {channel!r} must be a number, got {type(raw).__name__}"
                )
            value = float(raw)
            # The model reads float32: a finite double beyond its range would become inf there.
            if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
                raise MessageError(NON_FINITE, f"channel {channel!r} is not finite: {raw!r}")
            ordered.append(value)
        return Sample(stream=stream, timestamp=ts, values=tuple(ordered))

    def _columnar(self, stream: str, document: Mapping[str, Any]) -> SampleBlock:
        stamps = document["timestamps"]
        columns = document.get("values")
        if not isinstance(stamps, list) or not stamps:
            raise MessageError(BAD_SHAPE, "'timestamps' must be a non-empty list")
        if len(stamps) > self.max_samples:
            raise MessageError(OVERSIZED, f"{len(stamps)} samples, the limit is {self.max_samples}")
        if not isinstance(columns, dict):
            raise MessageError(BAD_SHAPE, "columnar 'values' must be an object of channel -> list")
        n = len(stamps)
        # type() checks first: numpy would silently turn "1.5" or true into numbers. fromiter is the
        # cheapest list -> array copy (no shape discovery), and this is the per-sample hot path.
        if set(map(type, stamps)) <= _NUMBER_TYPES:
            timestamps = np.fromiter(stamps, dtype=np.float64, count=n)
            if not timestamps_in_range(timestamps):
                raise MessageError(BAD_TIMESTAMP, _RANGE_MESSAGE)
        else:
            timestamps = np.fromiter((parse_timestamp(t) for t in stamps), dtype=np.float64, count=n)
        values = np.empty((n, len(self._channels)), dtype=np.float32)
        for index, channel in enumerate(self._channels):
            column = columns.get(channel)
            if column is None:
                raise MessageError(MISSING_CHANNEL, f"no values for channel {channel!r}")
            if not isinstance(column, list) or len(column) != n:
                raise MessageError(BAD_SHAPE, f"channel {channel!r} must be a list of {n} numbers")
            # bool is an int subclass but type() tells them apart; a sensor sending true is a bug.
            if not set(map(type, column)) <= _NUMBER_TYPES:
                raise MessageError(BAD_VALUE, f"channel {channel!r} must hold numbers only")
            as_float = np.fromiter(column, dtype=np.float64, count=n)
            if not np.isfinite(as_float).all():
                raise MessageError(NON_FINITE, f"channel {channel!r} has non-finite values")
            values[:, index] = as_float
        if not np.isfinite(values).all():
            raise MessageError(NON_FINITE, "values overflow float32")
        return SampleBlock(stream=stream, timestamps=timestamps, values=values)

    def parse_binary(self, payload: bytes, *, default_stream: str | None = None) -> SampleBlock:
        """Parse a binary columnar (``EDG1``) message; the same checks as the JSON columnar shape."""
        if len(payload) > self.max_message_bytes:
            raise MessageError(
                OVERSIZED, f"payload has {len(payload)} bytes, the limit is {self.max_message_bytes}"
            )
        stream, names, n, offset = self._binary_header(payload, default_stream)
        n_channels = len(names)
        expected = offset + 8 * n + 4 * n * n_channels
        if len(payload) != expected:
            raise MessageError(
                BAD_BINARY,
                f"binary message of {n} samples x {n_channels} channels needs {expected} bytes, "
                f"got {len(payload)}",
            )
        # Copies (not views of the payload): the engine keeps rows of them in its per-stream windows.
        timestamps = np.frombuffer(payload, dtype="<f8", count=n, offset=offset).astype(np.float64)
        if not timestamps_in_range(timestamps):
            raise MessageError(BAD_TIMESTAMP, _RANGE_MESSAGE)
        raw = np.frombuffer(payload, dtype="<f4", count=n * n_channels, offset=offset + 8 * n)
        raw = raw.reshape(n, n_channels)
        if tuple(names) == self._channels:
            values = raw.astype(np.float32)
        else:
            index = []
            for channel in self._channels:
                if channel not in names:
                    raise MessageError(MISSING_CHANNEL, f"no values for channel {channel!r}")
                index.append(names.index(channel))
            values = np.ascontiguousarray(raw[:, index], dtype=np.float32)
        if not np.isfinite(values).all():
            raise MessageError(NON_FINITE, "values must be finite")
        return SampleBlock(stream=stream, timestamps=timestamps, values=values)

    def _binary_header(self, payload: bytes, default_stream: str | None) -> tuple[str, list[str], int, int]:
        """Stream, channel names, sample count and the offset of the timestamps."""
        if len(payload) < _BINARY_HEADER.size:
            raise MessageError(BAD_BINARY, f"binary message truncated: {len(payload)} bytes, no full header")
        magic, version, n_channels, name_len, n = _BINARY_HEADER.unpack_from(payload)
        if magic != BINARY_MAGIC:
            raise MessageError(BAD_BINARY, f"binary message must start with {BINARY_MAGIC!r}, got {magic!r}")
        if version != BINARY_VERSION:
            raise MessageError(BAD_BINARY, f"binary message version {version} is not supported (only 1)")
        if n == 0:
            raise MessageError(BAD_SHAPE, "binary message has no samples")
        if n > self.max_samples:
            raise MessageError(OVERSIZED, f"{n} samples, the limit is {self.max_samples}")
        if n_channels == 0:
            raise MessageError(BAD_BINARY, "binary message has no channels")
        offset = _BINARY_HEADER.size
        stream, offset = _binary_text(payload, offset, name_len, "stream name")
        stream = check_stream(stream or default_stream)
        names: list[str] = []
        for _ in range(n_channels):
            if offset >= len(payload):
                raise MessageError(BAD_BINARY, "binary message truncated in the channel names")
            name, offset = _binary_text(payload, offset + 1, payload[offset], "channel name")
            names.append(name)
        if len(set(names)) != len(names):
            raise MessageError(BAD_BINARY, f"binary message names a channel twice: {names}")
        return stream, names, n, offset


def _binary_text(payload: bytes, offset: int, length: int, what: str) -> tuple[str, int]:
    end = offset + length
    if end > len(payload):
        raise MessageError(BAD_BINARY, f"binary message truncated in the {what}")
    try:
        return payload[offset:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MessageError(BAD_BINARY, f"binary message {what} is not UTF-8") from None


def _loads(text: str) -> object:
    """JSON text -> document: orjson (~6x faster than ``json.loads`` on a 512-sample columnar message, the
    component's largest per-sample cost), the standard library for what orjson refuses by design.

    orjson is strict RFC 8259: ``NaN``/``Infinity`` literals and integers beyond 64 bits are errors there,
    where ``json.loads`` reads them; re-reading those with the standard library keeps their reject kind
    (``non_finite``, counted per kind in the heartbeat) instead of turning them into ``not_json``.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageError(NOT_JSON, f"payload is not JSON: {exc.msg}") from None
    except RecursionError:
        raise MessageError(NOT_JSON, "payload is not JSON: nested too deeply") from None


def encode_binary(
    stream: str,
    timestamps: NDArray[np.float64] | Sequence[float],
    values: NDArray[np.floating[Any]],
    channels: Sequence[str],
) -> bytes:
    """Build a binary columnar (``EDG1``) message: ``timestamps`` [n] epoch s, ``values`` [n, channels].

    What a gateway (or a test) sends; the layout is documented in contracts §5.
    """
    stamps = np.asarray(timestamps, dtype="<f8")
    table = np.asarray(values, dtype="<f4")
    if table.ndim == 1:
        table = table[:, None]
    if table.shape != (stamps.shape[0], len(channels)):
        raise ValueError(f"values must be [{stamps.shape[0]}, {len(channels)}], got {list(table.shape)}")
    if not 1 <= len(channels) <= 255:
        raise ValueError(f"a binary message carries 1 to 255 channels, got {len(channels)}")
    name = stream.encode("utf-8")
    if len(name) > 0xFFFF:
        raise ValueError(f"stream name longer than 65535 bytes: {len(name)}")
    parts = [
        _BINARY_HEADER.pack(BINARY_MAGIC, BINARY_VERSION, len(channels), len(name), stamps.shape[0]),
        name,
    ]
    for channel in channels:
        encoded = channel.encode("utf-8")
        if len(encoded) > 255:
            raise ValueError(f"channel name longer than 255 bytes: {channel!r}")
        parts += [bytes([len(encoded)]), encoded]
    parts += [stamps.tobytes(), np.ascontiguousarray(table).tobytes()]
    return b"".join(parts)
