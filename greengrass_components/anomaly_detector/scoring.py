"""The scoring core: samples in, decisions out. No I/O, no clocks; the caller decides when to flush.

Full windows are queued and scored in micro-batches (one ``session.run`` per batch of windows, never one
per sample). A score is causal: the window ends at the sample that completed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .messages import Sample
from .model import ModelMetadata
from .windowing import WindowStore


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


@dataclass(frozen=True)
class _Pending:
    stream: str
    timestamp: float
    window: NDArray[np.float32]


class ScoringEngine:
    def __init__(self, model: ScoringModel, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._model = model
        self._windows = WindowStore(model.metadata.window_length, model.metadata.channels)
        self._pending: list[_Pending] = []
        self.windows_scored = 0
        self.batches_run = 0

    @property
    def model(self) -> ScoringModel:
        return self._model

    @property
    def metadata(self) -> ModelMetadata:
        return self._model.metadata

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def out_of_order(self) -> int:
        return self._windows.out_of_order

    def add(self, sample: Sample) -> list[Decision]:
        """Add one sample; returns decisions only when this sample filled a micro-batch."""
        window = self._windows.push(sample)
        if window is None:
            return []
        self._pending.append(_Pending(sample.stream, sample.timestamp, window))
        if len(self._pending) >= self.batch_size:
            return self.flush()
        return []

    def process(self, samples: Iterable[Sample]) -> list[Decision]:
        decisions: list[Decision] = []
        for sample in samples:
            decisions.extend(self.add(sample))
        return decisions

    def flush(self) -> list[Decision]:
        """Score every queued window now (batch full, max wait reached, or end of input)."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        batch = np.stack([p.window for p in pending]).astype(np.float32, copy=False)
        scores = self._model.score(batch)
        if scores.shape != (len(pending),):
            raise ValueError(f"model returned {scores.shape} scores for a batch of {len(pending)}")
        self.windows_scored += len(pending)
        self.batches_run += 1
        meta = self._model.metadata
        return [
            Decision(
                stream=p.stream,
                timestamp=p.timestamp,
                score=float(s),
                threshold=meta.threshold,
                # Strictly greater, per the contract: a score equal to the threshold is normal.
                is_anomaly=bool(s > meta.threshold),
                model_version=meta.model_version,
                window=p.window,
            )
            for p, s in zip(pending, scores, strict=True)
        ]

    def swap_model(self, model: ScoringModel) -> list[Decision]:
        """Switch models between micro-batches; queued windows are scored by the old model first.

        Window state is kept when the new model reads the same window shape and channels (no warm-up
        gap); otherwise it is reset, because old windows do not fit the new input.
        """
        decisions = self.flush()
        old, new = self._model.metadata, model.metadata
        self._model = model
        if (old.window_length, old.channels) != (new.window_length, new.channels):
            self._windows = WindowStore(new.window_length, new.channels)
        return decisions
