"""What the report shows, as plain values (epoch seconds for every time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Anomaly:
    """One anomaly event the cloud received."""

    timestamp: float
    score: float
    event_id: str


@dataclass(frozen=True)
class StreamView:
    stream: str
    thing_name: str
    timestamps: Sequence[float]
    values: Sequence[float]
    score_timestamps: Sequence[float]
    scores: Sequence[float]
    threshold: float
    anomalies: Sequence[Anomaly]
    label_windows: Sequence[tuple[float, float]]
    samples_in: int
    raw_bytes: int
    anomaly_bytes: int
    health_bytes: int
    lifecycle_states: Mapping[str, str] = field(default_factory=dict)

    @property
    def saved_fraction(self) -> float:
        """Share of the raw sensor bytes that did not have to cross the uplink."""
        if self.raw_bytes <= 0:
            return 0.0
        return 1.0 - (self.anomaly_bytes + self.health_bytes) / self.raw_bytes


@dataclass(frozen=True)
class ReportData:
    title: str
    series: str
    generated_at: str
    streams: Sequence[StreamView]
    lineage: Sequence[tuple[str, str]]
