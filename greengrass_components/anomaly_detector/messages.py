"""Parse sensor messages (contracts §5) into typed samples, in the model's channel order.

Three shapes (see greengrass_components/README.md for the schema):
- single: ``{"stream": "s", "timestamp": 1700000000.0, "values": {"value": 71.3}}``
- row batch: ``{"stream": "s", "samples": [{"timestamp": ..., "values": {...}}, ...]}``
- columnar batch: ``{"stream": "s", "timestamps": [...], "values": {"value": [...], ...}}``; parsed with
  numpy in one pass, it is the cheap shape for high-rate sensors.

Every way a message can be wrong raises :class:`MessageError` with a stable ``kind``, so the caller can
count rejects by kind (a health signal) and skip the message without stopping the stream. A message is
accepted or rejected whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
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


def parse_timestamp(raw: object) -> float:
    """Epoch seconds (int/float) or ISO-8601 string (naive means UTC) -> epoch seconds."""
    if isinstance(raw, bool):
        raise MessageError(BAD_TIMESTAMP, "timestamp must be epoch seconds or an ISO-8601 string, got bool")
    if isinstance(raw, int | float):
        value = float(raw)
        if not math.isfinite(value):
            raise MessageError(BAD_TIMESTAMP, f"timestamp must be finite, got {raw!r}")
        return value
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise MessageError(BAD_TIMESTAMP, f"timestamp is not ISO-8601: {raw!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise MessageError(
        BAD_TIMESTAMP, f"timestamp must be epoch seconds or an ISO-8601 string, got {type(raw).__name__}"
    )


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
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise MessageError(NOT_UTF8, "payload is not valid UTF-8") from None
        else:
            text = payload
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MessageError(NOT_JSON, f"payload is not JSON: {exc.msg}") from None
        return self.parse_document(document, default_stream=default_stream)

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
        stream = document.get("stream", default_stream)
        if not isinstance(stream, str) or not stream:
            raise MessageError(BAD_STREAM, "message needs a non-empty string 'stream'")
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
            if not np.isfinite(timestamps).all():
                raise MessageError(BAD_TIMESTAMP, "timestamps must be finite")
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
