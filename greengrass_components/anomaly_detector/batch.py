"""The data of one micro-batch: which stream each window belongs to, its scores, its decisions.

A batch is bookkept as :class:`Segment` s (consecutive windows of one stream) rather than one Python
object per window; :class:`ScoredBatch` builds the per-window views (streams, timestamps, arrival times,
:class:`Decision` objects) only when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .model import ModelMetadata


class ScoringModel(Protocol):
    @property
    def metadata(self) -> ModelMetadata: ...

    def score(self, windows: NDArray[np.float32]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class Decision:
    stream: str
    timestamp: float  # of the newest sample in the window
    score: float
    threshold: float
    is_anomaly: bool
    model_version: str
    window: NDArray[np.float32]  # [window_length, n_channels], oldest -> newest
    # With an ``edge_postprocess`` model: the post-processed score in [0, 1] and the level it is compared
    # to (``is_anomaly`` is ``post_score >= decision_level``); None for raw ``score > threshold`` decisions.
    post_score: float | None = None
    decision_level: float | None = None

    @property
    def deciding_score(self) -> float:
        """The score the decision was made on (events keep the window where it peaks)."""
        return self.score if self.post_score is None else self.post_score


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive windows of ONE stream in a micro-batch: rows ``start`` to ``stop`` of the batch.

    A batch is a few segments (one per message block, or one per single sample), not one Python object
    per window: the bookkeeping of a 512-sample block is one tuple, whatever its size.
    """

    stream: str
    start: int
    timestamps: Sequence[float] | NDArray[np.float64]  # of each window's newest sample
    arrived_at: float

    @property
    def stop(self) -> int:
        return self.start + len(self.timestamps)


@dataclass(frozen=True)
class ScoredBatch:
    """One micro-batch's result. ``windows`` is a view of the engine's buffer: use it before the next add."""

    segments: tuple[Segment, ...]
    scores: NDArray[np.float32]
    windows: NDArray[np.float32]
    threshold: float
    model_version: str
    flags: NDArray[np.bool_] | None = None  # the rule's decisions; None: ``scores > threshold``
    post_scores: NDArray[np.float64] | None = None
    decision_level: float | None = None
    # Windows whose raw score was not finite (the model overflowed on huge inputs): scored 0, never
    # anomalous, counted by the app as the reject kind ``non_finite_score``.
    non_finite: int = 0

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @cached_property
    def streams(self) -> list[str]:
        """The stream of every window (built on demand: the hot path reads segments)."""
        return [segment.stream for segment in self.segments for _ in range(segment.start, segment.stop)]

    @cached_property
    def timestamps(self) -> list[float]:
        out: list[float] = []
        for segment in self.segments:
            stamps = segment.timestamps
            out.extend(stamps.tolist() if isinstance(stamps, np.ndarray) else stamps)
        return out

    @cached_property
    def arrived_at(self) -> NDArray[np.float64]:
        """Arrival time of every window (the arrival of the message that completed it)."""
        if len(self.segments) == 1:
            return np.full(len(self), self.segments[0].arrived_at)
        counts = [segment.stop - segment.start for segment in self.segments]
        return np.repeat(np.array([segment.arrived_at for segment in self.segments]), counts)

    @cached_property
    def segment_starts(self) -> NDArray[np.int64]:
        """The first row of every segment, ascending (for ``searchsorted`` from rows to segments)."""
        return np.fromiter(
            (segment.start for segment in self.segments), dtype=np.int64, count=len(self.segments)
        )

    def segment_of(self, index: int) -> Segment:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} of a batch of {len(self)}")
        return self.segments[int(np.searchsorted(self.segment_starts, index, side="right")) - 1]

    def anomalous(self) -> NDArray[np.bool_]:
        if self.flags is not None:
            return self.flags
        # Strictly greater, per the contract: a score equal to the threshold is normal.
        return self.scores > self.threshold

    def decision(self, index: int, segment: Segment | None = None) -> Decision:
        """Window ``index`` as a :class:`Decision` (``segment``: its segment, when the caller knows it)."""
        segment = segment if segment is not None else self.segment_of(index)
        score = float(self.scores[index])
        return Decision(
            stream=segment.stream,
            timestamp=float(segment.timestamps[index - segment.start]),
            score=score,
            threshold=self.threshold,
            is_anomaly=bool(self.flags[index]) if self.flags is not None else score > self.threshold,
            model_version=self.model_version,
            window=self.windows[index].copy(),
            post_score=None if self.post_scores is None else float(self.post_scores[index]),
            decision_level=self.decision_level,
        )

    def decisions(self) -> list[Decision]:
        return [
            self.decision(i, segment) for segment in self.segments for i in range(segment.start, segment.stop)
        ]


def finite_scores(scores: NDArray[np.float32]) -> tuple[NDArray[np.float32], int]:
    """``scores`` with every non-finite one set to 0, and how many there were.

    Inputs up to float32's limit are valid, but the model's arithmetic can overflow on them. An inf or NaN
    score could not be reported (events and heartbeats are JSON) and would poison the post-processing's
    running sums for good, so such a window is scored 0 (never anomalous) and counted instead.
    """
    # One float64 sum is the cheap common-case test: it cannot overflow on finite float32 scores.
    if np.isfinite(scores.sum(dtype=np.float64)):
        return scores, 0
    finite = np.isfinite(scores)
    return np.where(finite, scores, np.float32(0.0)).astype(np.float32), int(scores.size - finite.sum())
