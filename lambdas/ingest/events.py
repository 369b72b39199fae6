"""Parse and validate what devices publish (docs/contracts.md §6 and the health heartbeat).

The IoT rules (``SELECT *, topic(2) AS thing_from_topic FROM 'edge/+/anomalies'`` and the same for
``edge/+/health``) hand the Lambda the device's JSON object plus ``thing_from_topic``. The device policy
only lets a thing publish under ``edge/<its own name>/``, so the topic is the trusted identity and the
``thing_name`` in the body must match it: a device must not write as another device.

Everything here is pure; a malformed message raises ``BadEventError`` naming the field and the problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from lambdas.ingest.drift import PeriodDistribution, parse_distribution
from lambdas.ingest.errors import BadEventError

ANOMALY_SCHEMA: Final = "edgeml.anomaly/1"
HEALTH_SCHEMA: Final = "edgeml.health/1"
# Added by the IoT rule's SQL (topic(2)); not part of what the device sent.
TOPIC_THING_FIELD: Final = "thing_from_topic"

# Bounds: an event carries one window (window_length x n_channels, e.g. 32 x 1); these leave ample room
# while keeping an item far below DynamoDB's 400 KB and a message below IoT Core's 128 KB.
MAX_CHANNELS: Final = 64
MAX_VALUE_ROWS: Final = 1024
MAX_VALUE_CELLS: Final = 4096
MAX_MESSAGE_BYTES: Final = 128 * 1024
MAX_HEARTBEAT_BYTES: Final = 32 * 1024
MAX_TEXT_LENGTH: Final = 128

# AWS IoT thing names; no '#', which the table's keys use as a separator.
_THING_NAME = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
# uuid4 hex (or hyphenated); it becomes part of DynamoDB keys and of the S3 archive key.
_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AnomalyEvent:
    event_id: str
    thing_name: str
    stream: str
    timestamp: datetime  # timezone-aware UTC
    start: datetime | None
    end: datetime | None
    score: float
    peak_score: float
    threshold: float
    model_version: str
    channels: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]
    suppressed: int
    raw_json: str  # the device's message as JSON, without the rule-added fields


@dataclass(frozen=True)
class Heartbeat:
    thing_name: str
    timestamp: datetime  # timezone-aware UTC
    model_version: str | None
    counters: Mapping[str, int | float]  # the top-level numeric fields (rates, counts, latencies)
    rejects: Mapping[str, int]
    raw_json: str
    # The period's score histogram and input means (drift input); None when the device sent none.
    distribution: PeriodDistribution | None = None


def parse_message(payload: object) -> AnomalyEvent | Heartbeat:
    """Route by the ``schema`` field: an anomaly event or a heartbeat, or ``BadEventError``."""
    if not isinstance(payload, Mapping):
        raise BadEventError(f"message must be a JSON object, got {_type_name(payload)}")
    schema = payload.get("schema")
    if schema == ANOMALY_SCHEMA:
        return parse_anomaly(payload)
    if schema == HEALTH_SCHEMA:
        return parse_heartbeat(payload)
    if schema is None:
        raise BadEventError(
            f"message has no 'schema' field; expected {ANOMALY_SCHEMA!r} or {HEALTH_SCHEMA!r}"
        )
    raise BadEventError(f"unsupported schema {schema!r}; expected {ANOMALY_SCHEMA!r} or {HEALTH_SCHEMA!r}")


def parse_anomaly(payload: Mapping[str, object]) -> AnomalyEvent:
    fields = _Fields(payload, "anomaly event")
    fields.expect_schema(ANOMALY_SCHEMA)
    event_id = fields.text("event_id", pattern=_EVENT_ID)
    fields.label = f"anomaly event {event_id}"
    thing_name = fields.thing_name()
    if "score" not in payload and "peak_score" not in payload:
        raise BadEventError(f"{fields.label}: needs 'score' or 'peak_score'")
    score = fields.number("score" if "score" in payload else "peak_score")
    peak_score = fields.number("peak_score") if "peak_score" in payload else score
    channels = fields.channels()
    values = fields.values(len(channels))
    return AnomalyEvent(
        event_id=event_id,
        thing_name=thing_name,
        stream=fields.text("stream"),
        timestamp=fields.timestamp("timestamp"),
        # Optional: absent and null both mean "not given".
        start=fields.timestamp("start") if payload.get("start") is not None else None,
        end=fields.timestamp("end") if payload.get("end") is not None else None,
        score=score,
        peak_score=peak_score,
        threshold=fields.number("threshold"),
        model_version=fields.text("model_version"),
        channels=channels,
        values=values,
        suppressed=fields.count("suppressed"),
        # Last: the typed checks above give more precise messages than the size and NaN checks here.
        raw_json=fields.raw_json(MAX_MESSAGE_BYTES),
    )


def parse_heartbeat(payload: Mapping[str, object]) -> Heartbeat:
    fields = _Fields(payload, "heartbeat")
    fields.expect_schema(HEALTH_SCHEMA)
    thing_name = fields.thing_name()
    fields.label = f"heartbeat from {thing_name}"
    counters: dict[str, int | float] = {}
    for name, value in payload.items():
        if name in {"schema", "thing_name", "timestamp", TOPIC_THING_FIELD, "model_version", "rejects"}:
            continue
        if value is None or isinstance(value, str | list | dict | bool):
            continue  # kept in raw_json only; counters are the numeric fields
        counters[name] = fields.numeric(name)
    rejects = fields.rejects()
    model_version = fields.text("model_version") if payload.get("model_version") else None
    return Heartbeat(
        thing_name=thing_name,
        timestamp=fields.timestamp("timestamp"),
        model_version=model_version,
        counters=counters,
        rejects=rejects,
        raw_json=fields.raw_json(MAX_HEARTBEAT_BYTES),
        distribution=parse_distribution(payload.get("distribution"), fields.label),
    )


class _Fields:
    """Typed reads of one message's fields; every failure names the message and the field."""

    def __init__(self, payload: Mapping[str, object], label: str) -> None:
        self._payload = payload
        self.label = label

    def _fail(self, message: str) -> BadEventError:
        return BadEventError(f"{self.label}: {message}")

    def _get(self, name: str) -> object:
        if name not in self._payload:
            raise self._fail(f"missing required field {name!r}")
        return self._payload[name]

    def expect_schema(self, schema: str) -> None:
        if self._payload.get("schema") != schema:
            raise self._fail(f"field 'schema' must be {schema!r}, got {self._payload.get('schema')!r}")

    def text(self, name: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self._fail(f"field {name!r} must be a string, got {_type_name(value)}")
        if pattern is not None:
            if not pattern.match(value):
                raise self._fail(f"field {name!r}={value[:200]!r} does not match {pattern.pattern}")
        elif not value or len(value) > MAX_TEXT_LENGTH or _CONTROL_CHARS.search(value):
            raise self._fail(
                f"field {name!r} must be 1-{MAX_TEXT_LENGTH} printable characters, got {value[:200]!r}"
            )
        return value

    def thing_name(self) -> str:
        thing_name = self.text("thing_name", pattern=_THING_NAME)
        topic_thing = self._payload.get(TOPIC_THING_FIELD)
        if topic_thing is None:
            raise self._fail(
                f"missing {TOPIC_THING_FIELD!r}: the IoT rule must add topic(2) AS {TOPIC_THING_FIELD}"
            )
        if topic_thing != thing_name:
            raise self._fail(
                f"thing_name {thing_name!r} does not match the publishing device {topic_thing!r} "
                "(a device may only report as itself)"
            )
        return thing_name

    def number(self, name: str) -> float:
        return float(self.numeric(name))

    def numeric(self, name: str) -> int | float:
        """A finite JSON number, kept as int or float (counters stay integers)."""
        value = self._get(name)
        # bool is an int subclass; true/false is never a score.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(f"field {name!r} must be a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise self._fail(f"field {name!r} must be finite, got {value}")
        return value

    def count(self, name: str) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(f"field {name!r} must be an integer, got {_type_name(value)}")
        if value < 0:
            raise self._fail(f"field {name!r} must be >= 0, got {value}")
        return value

    def timestamp(self, name: str) -> datetime:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self._fail(
                f"field {name!r} must be an ISO-8601 string or epoch seconds, got {_type_name(value)}"
            )
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise self._fail(f"field {name!r}={value[:64]!r} is not an ISO-8601 timestamp") from None
            if moment.tzinfo is None:
                # A naive time is ambiguous across devices in different zones; the contract says UTC.
                raise self._fail(f"field {name!r}={value!r} has no UTC offset (use e.g. 'Z')")
            return moment.astimezone(UTC)
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise self._fail(f"field {name!r}={value!r} is not a valid epoch time") from None

    def channels(self) -> tuple[str, ...]:
        value = self._get("channels")
        if not isinstance(value, list) or not value:
            raise self._fail(f"field 'channels' must be a non-empty list, got {_type_name(value)}")
        if len(value) > MAX_CHANNELS:
            raise self._fail(f"field 'channels' has {len(value)} entries; the limit is {MAX_CHANNELS}")
        if not all(isinstance(c, str) and 0 < len(c) <= MAX_TEXT_LENGTH for c in value):
            raise self._fail("field 'channels' must hold non-empty strings")
        return tuple(value)

    def values(self, n_channels: int) -> tuple[tuple[float, ...], ...]:
        rows = self._get("values")
        if not isinstance(rows, list) or not rows:
            raise self._fail(f"field 'values' must be a non-empty list of rows, got {_type_name(rows)}")
        if len(rows) > MAX_VALUE_ROWS or len(rows) * n_channels > MAX_VALUE_CELLS:
            raise self._fail(
                f"field 'values' is too large: {len(rows)} rows x {n_channels} channels "
                f"(limits: {MAX_VALUE_ROWS} rows, {MAX_VALUE_CELLS} values)"
            )
        parsed: list[tuple[float, ...]] = []
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != n_channels:
                raise self._fail(
                    f"values[{index}] must be a list of {n_channels} numbers (one per channel), "
                    f"got {_type_name(row)}" + (f" of length {len(row)}" if isinstance(row, list) else "")
                )
            cells: list[float] = []
            for cell in row:
                if isinstance(cell, bool) or not isinstance(cell, int | float):
                    raise self._fail(f"values[{index}] holds a {_type_name(cell)}, not a number")
                if not math.isfinite(cell):
                    raise self._fail(f"values[{index}] holds a non-finite number {cell}")
                cells.append(float(cell))
            parsed.append(tuple(cells))
        return tuple(parsed)

    def rejects(self) -> dict[str, int]:
        value = self._payload.get("rejects", {})
        if not isinstance(value, Mapping):
            raise self._fail(f"field 'rejects' must be an object, got {_type_name(value)}")
        rejects: dict[str, int] = {}
        for kind, count in value.items():
            if (
                not isinstance(kind, str)
                or isinstance(count, bool)
                or not isinstance(count, int)
                or count < 0
            ):
                raise self._fail(f"field 'rejects' must map kinds to counts >= 0, got {kind!r}: {count!r}")
            rejects[kind] = count
        return rejects

    def raw_json(self, limit: int) -> str:
        device_fields = {k: v for k, v in self._payload.items() if k != TOPIC_THING_FIELD}
        try:
            text = json.dumps(device_fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise self._fail("message holds a NaN or infinite number") from None
        except TypeError as exc:
            raise self._fail(f"message is not JSON-serialisable: {exc}") from None
        size = len(text.encode("utf-8"))
        if size > limit:
            raise self._fail(f"message is {size} bytes; the limit is {limit}")
        return text


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", str: "string", int: "integer", float: "number", list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)
