"""Anomaly events (contracts §6): consecutive anomalous windows of a stream merge into one event.

Per stream, an event *opens* at the first anomalous decision and *closes* at the next normal decision,
after ``max_event_windows`` anomalous windows (so a long anomaly still reports periodically), when the
stream goes quiet for ``idle_close_s`` (wall clock), or at shutdown. A closed event carries its start and
end, the peak score, and the peak window's raw values (bounded: one window). The peak is the window with
the highest *deciding* score: the post-processed score when the model post-processes (then the event
carries both that ``post_score`` and the window's raw ``score``), else the raw score.

Alert storms are limited per stream with a token bucket in *sample* time (``burst`` events, refilled at
``rate_per_hour``), so a replay at any speed makes the same decisions as the live stream. An event closed
while the bucket is empty is not sent; it is counted, and the next event sent for that stream carries the
count in ``suppressed`` (the heartbeat reports the total too), so the cloud knows what was held back.

Open events are checkpointed: after each change the app stores, in the same spool transaction as the
batch's closed events, the event as it would be sent if the process died now (``interrupted: true``, end =
the last anomalous window seen), and deletes it in the transaction that spools the closed event. A
``kill -9`` while an event is open therefore loses nothing: the next start spools the checkpoint
(``Spool.recover_open_events``). Only streams whose event changed since the last checkpoint are written.

Every event fits in ``max_event_bytes`` of JSON (IoT Core refuses a message over 128 KiB, and one event
that can never be sent would hold back every later one): when the peak window is too large, ``values``
keeps only its last rows (those ending at the peak sample) and the event says ``values_truncated: true``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

import numpy as np
import orjson
from numpy.typing import NDArray

from .batch import Decision

SCHEMA = "edgeml.anomaly/1"
# IoT Core (and the nucleus's PublishToIoTCore) refuse a larger message: such an event is never sent.
IOT_CORE_MAX_MESSAGE_BYTES = 128 * 1024
# A safe margin under that limit (the cloud re-encodes the JSON, a few bytes longer).
MAX_EVENT_BYTES = 120 * 1024
# The cloud's ingest refuses an event with more rows or cells of `values` than this
# (lambdas/ingest/events.py MAX_VALUE_ROWS / MAX_VALUE_CELLS; a test keeps the two equal).
MAX_EVENT_ROWS = 1024
MAX_EVENT_CELLS = 4096
# Below this not even an event's fixed fields (ids, times, scores, channel names) reliably fit.
MIN_EVENT_BYTES = 4 * 1024


def iso_utc(timestamp: float) -> str:
    """Epoch seconds -> ``2013-12-11T06:00:00Z`` (fractional seconds only when present)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def new_event_id() -> str:
    return uuid.uuid4().hex


def float32_rows(window: NDArray[np.float32]) -> list[list[float]]:
    """Each float32 as the shortest decimal that reads back as the same float32 (71.3, not 71.30000305).

    orjson writes numpy float32 that way (the same digits as ``str(np.float32)``, tested), ~25x faster
    than formatting each value in Python.
    """
    rows: list[list[float]] = orjson.loads(orjson.dumps(window, option=orjson.OPT_SERIALIZE_NUMPY))
    return rows


@dataclass(frozen=True)
class AnomalyEvent:
    event_id: str
    thing_name: str
    stream: str
    timestamp: str
    start: str
    end: str
    score: float
    peak_score: float
    threshold: float
    model_version: str
    channels: list[str]
    values: list[list[float]]
    suppressed: int
    windows: int = 1
    # Post-processed score of the peak window and the level it is compared to (None: raw decisions).
    post_score: float | None = None
    decision_level: float | None = None
    # The process stopped while the event was open: spooled from its checkpoint on the next start.
    interrupted: bool = False
    # ``values`` holds only the last rows of the peak window (the whole window did not fit in the bound).
    values_truncated: bool = False
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, object]:
        # Not dataclasses.asdict: its deep copy of ``values`` was a tenth of the edge path's time per event.
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        # Only a post-processing model has these: a raw-threshold model's events stay as they were.
        for key in ("post_score", "decision_level"):
            if body[key] is None:
                del body[key]
        # Flags only when set: an ordinary event is byte for byte what it was before they existed.
        for key in ("interrupted", "values_truncated"):
            if not body[key]:
                del body[key]
        return body

    def to_json_bytes(self) -> bytes:
        """Compact JSON (every byte counts on a cellular uplink); a non-finite number is refused, not
        written as ``null`` (what orjson would do) or ``NaN`` (not JSON)."""
        body = self.to_dict()
        numbers = [self.score, self.peak_score, self.threshold, self.post_score, self.decision_level]
        if not all(math.isfinite(x) for x in numbers if x is not None):
            raise ValueError(f"event {self.event_id} has a non-finite score or threshold: {numbers}")
        try:
            return orjson.dumps(body)
        except orjson.JSONEncodeError as exc:  # e.g. a string that is not UTF-8 (a lone surrogate)
            raise ValueError(f"event {self.event_id} cannot be encoded as JSON: {exc}") from exc

    def encode(self, max_bytes: int) -> bytes:
        """:meth:`to_json_bytes`, refused (``ValueError``) when longer than ``max_bytes``: only possible
        when even the fields other than ``values`` do not fit, see :func:`fit_event`."""
        payload = self.to_json_bytes()
        if len(payload) > max_bytes:
            raise ValueError(
                f"event {self.event_id} is {len(payload)} bytes of JSON; the limit is {max_bytes}"
            )
        return payload


def fit_event(event: AnomalyEvent, max_bytes: int) -> AnomalyEvent:
    """``event`` itself when its JSON fits in ``max_bytes`` and its ``values`` in the cloud's row and cell
    limits, else with only the last rows of ``values`` that fit, marked ``values_truncated``.

    The last rows are kept because the window ends at the sample that made it the peak: the rows nearest
    the anomaly tell the most. Sizes are measured on the compact JSON the spool stores (a non-finite
    number, refused later by :meth:`AnomalyEvent.to_json_bytes`, is measured as ``null``).
    """
    rows = min(MAX_EVENT_ROWS, MAX_EVENT_CELLS // max(len(event.channels), 1))
    if len(event.values) > rows:
        event = replace(event, values=event.values[len(event.values) - rows :], values_truncated=True)
    try:
        if len(orjson.dumps(event.to_dict())) <= max_bytes:
            return event
    except orjson.JSONEncodeError:
        return event  # cannot be encoded at all: refused (ValueError) when the app encodes it, and counted
    bare = replace(event, values=[], values_truncated=True)
    room = max_bytes - len(orjson.dumps(bare.to_dict()))
    # In ``[r1,r2,...]`` each row costs its JSON plus a comma, the first no comma: start at -1.
    used, kept = -1, 0
    for row in reversed(event.values):
        used += len(orjson.dumps(row)) + 1
        if used > room:
            break
        kept += 1
    return replace(event, values=event.values[len(event.values) - kept :], values_truncated=True)


@dataclass(frozen=True)
class Checkpoints:
    """What the spool must change about open events, in the transaction of the batch's closed events."""

    # Per stream whose open event changed (and would be sent when it closes): the event as it would be
    # sent if the process stopped now.
    upserts: tuple[AnomalyEvent, ...] = ()
    # Streams whose checkpointed event closed (spooled, suppressed or lost) since the last save.
    deletes: tuple[str, ...] = ()
    # Every changed stream looked at (with those the rate limit will hold back, which need no checkpoint).
    examined: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)


@dataclass
class _Open:
    event_id: str
    start: float
    end: float
    peak_ts: float
    peak_score: float
    peak_post_score: float | None
    peak_window: NDArray[np.float32]
    threshold: float
    decision_level: float | None
    model_version: str
    windows: int
    touched_at: float  # wall clock (monotonic) of the last update, for the idle rule
    # The peak window as JSON-ready rows, made once per peak (a checkpoint may be written every batch).
    rows: list[list[float]] | None = None


@dataclass
class _Bucket:
    tokens: float
    last_ts: float


class EventBuilder:
    """Merges anomalous decisions into events and rate-limits them per stream."""

    def __init__(
        self,
        *,
        thing_name: str,
        burst: int = 10,
        rate_per_hour: float = 60.0,
        max_event_windows: int = 360,
        idle_close_s: float = 5.0,
        cooldown_s: float = 0.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
        id_factory: Callable[[], str] = new_event_id,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if rate_per_hour < 0 or cooldown_s < 0 or idle_close_s < 0:
            raise ValueError("rate_per_hour, cooldown_s and idle_close_s must be >= 0")
        if max_event_windows < 1:
            raise ValueError(f"max_event_windows must be >= 1, got {max_event_windows}")
        if max_event_bytes < MIN_EVENT_BYTES:
            raise ValueError(f"max_event_bytes must be >= {MIN_EVENT_BYTES}, got {max_event_bytes}")
        self._thing_name = thing_name
        self._burst = float(burst)
        self._refill_per_s = rate_per_hour / 3600.0
        self._max_event_windows = max_event_windows
        self._idle_close_s = idle_close_s
        self._cooldown_s = cooldown_s
        self.max_event_bytes = max_event_bytes
        self._id_factory = id_factory
        self._open: dict[str, _Open] = {}
        # Checkpoint bookkeeping: streams whose open event changed since the last save, streams with a
        # saved checkpoint, and those of them whose event has closed since (their checkpoint must go).
        self._changed: set[str] = set()
        self._saved: set[str] = set()
        self._closed: set[str] = set()
        self._buckets: dict[str, _Bucket] = {}
        self._last_sent: dict[str, float] = {}
        self._held_back: dict[str, int] = {}
        self.suppressed_total = 0
        self.events_closed = 0

    @property
    def open_streams(self) -> tuple[str, ...]:
        return tuple(self._open)

    def is_open(self, stream: str) -> bool:
        return stream in self._open

    def offer(self, decision: Decision, channels: tuple[str, ...], now: float = 0.0) -> list[AnomalyEvent]:
        """Feed one decision (any order across streams, time order within a stream); returns closed events."""
        current = self._open.get(decision.stream)
        if not decision.is_anomaly:
            if current is None:
                return []
            return self._close(decision.stream, channels)
        self._changed.add(decision.stream)
        if current is None:
            self._open[decision.stream] = _Open(
                # Given at open, so a checkpoint and the event it becomes share one id (cloud de-dup).
                event_id=self._id_factory(),
                start=decision.timestamp,
                end=decision.timestamp,
                peak_ts=decision.timestamp,
                peak_score=decision.score,
                peak_post_score=decision.post_score,
                peak_window=decision.window,
                threshold=decision.threshold,
                decision_level=decision.decision_level,
                model_version=decision.model_version,
                windows=1,
                touched_at=now,
            )
        else:
            current.end = decision.timestamp
            current.windows += 1
            current.touched_at = now
            peak = current.peak_score if current.peak_post_score is None else current.peak_post_score
            if decision.deciding_score > peak:
                current.peak_ts, current.peak_score = decision.timestamp, decision.score
                current.peak_post_score = decision.post_score
                current.peak_window = decision.window
                current.rows = None
        if self._open[decision.stream].windows >= self._max_event_windows:
            return self._close(decision.stream, channels)
        return []

    def expire(self, now: float, channels: tuple[str, ...]) -> list[AnomalyEvent]:
        """Close events of streams that went quiet for ``idle_close_s`` (wall clock ``now``)."""
        stale = [s for s, e in self._open.items() if now - e.touched_at >= self._idle_close_s]
        return [ev for stream in stale for ev in self._close(stream, channels)]

    def close_all(self, channels: tuple[str, ...]) -> list[AnomalyEvent]:
        """Shutdown, end of input or a model swap: every open event is closed now."""
        return [ev for stream in list(self._open) for ev in self._close(stream, channels)]

    def checkpoints(self, channels: tuple[str, ...]) -> Checkpoints:
        """The open-event changes since the last :meth:`checkpoints_saved` (empty when none changed)."""
        if not self._changed and not self._closed:
            return Checkpoints()
        examined = tuple(sorted(self._changed))
        upserts = tuple(
            self._event(
                stream,
                self._open[stream],
                channels,
                suppressed=self._held_back.get(stream, 0),
                interrupted=True,
            )
            for stream in examined
            # An event the rate limit will hold back is not sent if the process dies either.
            if self._would_allow(stream, self._open[stream].start)
        )
        return Checkpoints(upserts=upserts, deletes=tuple(sorted(self._closed)), examined=examined)

    def checkpoints_saved(self, saved: Checkpoints) -> None:
        """``saved`` is committed: forget those changes (after a failed write they are offered again)."""
        self._changed.difference_update(saved.examined)
        self._closed.difference_update(saved.deletes)
        self._saved.difference_update(saved.deletes)
        self._saved.update(event.stream for event in saved.upserts)

    def _cooling_down(self, stream: str, ts: float) -> bool:
        last = self._last_sent.get(stream)
        return last is not None and self._cooldown_s > 0 and ts - last < self._cooldown_s

    def _refilled(self, bucket: _Bucket, ts: float) -> float:
        return min(self._burst, bucket.tokens + max(0.0, ts - bucket.last_ts) * self._refill_per_s)

    def _would_allow(self, stream: str, ts: float) -> bool:
        """:meth:`_allow` without taking anything. An open event's answer cannot change before it closes
        (only closing an event of the same stream moves its bucket or cooldown)."""
        if self._cooling_down(stream, ts):
            return False
        bucket = self._buckets.get(stream)
        return bucket is None or self._refilled(bucket, ts) >= 1.0

    def _allow(self, stream: str, ts: float) -> bool:
        if self._cooling_down(stream, ts):
            return False
        bucket = self._buckets.get(stream)
        if bucket is None:
            bucket = self._buckets[stream] = _Bucket(tokens=self._burst, last_ts=ts)
        bucket.tokens = self._refilled(bucket, ts)
        bucket.last_ts = max(bucket.last_ts, ts)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        self._last_sent[stream] = ts
        return True

    def _close(self, stream: str, channels: tuple[str, ...]) -> list[AnomalyEvent]:
        event = self._open.pop(stream)
        self.events_closed += 1
        self._changed.discard(stream)
        if stream in self._saved:
            self._closed.add(stream)
        if not self._allow(stream, event.start):
            self._held_back[stream] = self._held_back.get(stream, 0) + 1
            self.suppressed_total += 1
            return []
        return [self._event(stream, event, channels, suppressed=self._held_back.pop(stream, 0))]

    def _event(
        self,
        stream: str,
        event: _Open,
        channels: tuple[str, ...],
        *,
        suppressed: int,
        interrupted: bool = False,
    ) -> AnomalyEvent:
        if event.rows is None:
            event.rows = float32_rows(event.peak_window)
        return fit_event(
            AnomalyEvent(
                event_id=event.event_id,
                thing_name=self._thing_name,
                stream=stream,
                timestamp=iso_utc(event.peak_ts),
                start=iso_utc(event.start),
                end=iso_utc(event.end),
                score=event.peak_score,
                peak_score=event.peak_score,
                threshold=event.threshold,
                model_version=event.model_version,
                channels=list(channels),
                values=event.rows,
                suppressed=suppressed,
                windows=event.windows,
                post_score=event.peak_post_score,
                decision_level=event.decision_level,
                interrupted=interrupted,
            ),
            self.max_event_bytes,
        )
