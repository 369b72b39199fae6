"""What the report shows, as plain values (epoch seconds for every time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Anomaly:
    """One anomaly event the cloud received."""

    timestamp: float
    score: float  # the model's raw score
    event_id: str
    # What the component decided on, with an ``edge_postprocess`` model (docs/contracts.md §6).
    post_score: float | None = None


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
    # Set when the model carries ``edge_postprocess``: ``scores`` are then the post-processed scores
    # (0-1) the component compared to this level; None: ``scores`` are raw, compared to ``threshold``.
    decision_level: float | None = None

    @property
    def postprocessed(self) -> bool:
        return self.decision_level is not None

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
