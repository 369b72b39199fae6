"""Anomaly events (contracts §6): built from anomalous decisions, serialised as compact JSON.

One event per forwarded anomalous window. With a cooldown, anomalous windows of the same stream that
follow a forwarded event within ``cooldown_s`` (sample time) are not sent; they are counted and the next
forwarded event carries that count in ``suppressed``, so the cloud still knows how much was held back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from .scoring import Decision

SCHEMA = "edgeml.anomaly/1"


def iso_utc(timestamp: float) -> str:
    """Epoch seconds -> ``2013-12-11T06:00:00Z`` (fractional seconds only when present)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def new_event_id() -> str:
    return uuid.uuid4().hex


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
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json_bytes(self) -> bytes:
        # Compact separators: every byte counts on a cellular uplink.
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode("utf-8")


class EventBuilder:
    """Decides which anomalous decisions become events (cooldown) and builds them."""

    def __init__(
        self,
        *,
        thing_name: str,
        cooldown_s: float = 0.0,
        id_factory: Callable[[], str] = new_event_id,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self._thing_name = thing_name
        self._cooldown_s = cooldown_s
        self._id_factory = id_factory
        self._last_sent: dict[str, float] = {}
        self._held_back: dict[str, int] = {}
        self.suppressed_total = 0

    def offer(self, decision: Decision, channels: tuple[str, ...]) -> AnomalyEvent | None:
        """Return the event to forward for this decision, or None (normal window, or in cooldown)."""
        if not decision.is_anomaly:
            return None
        last = self._last_sent.get(decision.stream)
        if last is not None and self._cooldown_s > 0 and decision.timestamp - last < self._cooldown_s:
            self._held_back[decision.stream] = self._held_back.get(decision.stream, 0) + 1
            self.suppressed_total += 1
            return None
        self._last_sent[decision.stream] = decision.timestamp
        ts = iso_utc(decision.timestamp)
        return AnomalyEvent(
            event_id=self._id_factory(),
            thing_name=self._thing_name,
            stream=decision.stream,
            timestamp=ts,
            start=ts,
            end=ts,
            score=decision.score,
            peak_score=decision.score,
            threshold=decision.threshold,
            model_version=decision.model_version,
            channels=list(channels),
            # str(np.float32) is the shortest repr that round-trips the float32 (71.3, not 71.30000305).
            values=[[float(str(v)) for v in row] for row in decision.window],
            suppressed=self._held_back.pop(decision.stream, 0),
        )
