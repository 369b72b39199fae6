"""The scoring core: samples in, scored micro-batches out. No I/O, no clocks of its own.

Full windows are copied into one preallocated batch array and scored with ONE ``session.run`` per
micro-batch, never one per sample. A score is causal: the window ends at the sample that completed it.
:class:`BatchPolicy` decides when a batch is due: its target size follows the arrival rate (about
``latency_budget_s`` worth of windows), and ``max_wait_s`` bounds how long any window waits.
:class:`DecisionRule` turns a batch's raw scores into decisions: ``score > threshold`` (vectorised), or,
when the model carries ``edge_postprocess`` metadata, the online post-processing of ``postprocess.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from .batch import Decision, ScoredBatch, ScoringModel, Segment, finite_scores
from .decision_rule import DecisionRule
from .errors import MessageError
from .messages import DUPLICATE_TIMESTAMP, OUT_OF_ORDER, Sample, SampleBlock
from .model import ModelMetadata
from .windowing import WindowStore, windows_view


class BatchPolicy:
    """When to score: enough windows for the current arrival rate, or the oldest waited ``max_wait_s``.

    At 1,000 windows/s and a 1 ms budget the target is 1 (score at once: lowest latency); under a burst
    of 100,000 windows/s it is 100 (amortise the per-run overhead). A quiet stream never waits longer
    than ``max_wait_s``.
    """

    def __init__(
        self,
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.05,
        latency_budget_s: float = 0.001,
        rate_period_s: float = 0.05,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.latency_budget_s = latency_budget_s
        self._rate_period_s = rate_period_s
        self._rate = 0.0
        self._count = 0
        self._period_start: float | None = None

    @property
    def rate(self) -> float:
        """Smoothed arrival rate, windows per second."""
        return self._rate

    def observe(self, windows: int, now: float) -> None:
        if self._period_start is None:
            self._period_start = now
        self._count += windows
        elapsed = now - self._period_start
        if elapsed >= self._rate_period_s:
            measured = self._count / elapsed
            self._rate = measured if self._rate == 0.0 else 0.5 * self._rate + 0.5 * measured
            self._count, self._period_start = 0, now

    @property
    def target(self) -> int:
        return max(1, min(self.max_batch, int(self._rate * self.latency_budget_s)))

    def due(self, pending: int, oldest_at: float | None, now: float) -> bool:
        if pending == 0:
            return False
        if pending >= self.target:
            return True
        return oldest_at is not None and now - oldest_at >= self.max_wait_s

    def wait_s(self, oldest_at: float | None, now: float, idle_s: float) -> float:
        """How long the loop may block for input before a pending window becomes overdue."""
        if oldest_at is None:
            return idle_s
        return max(0.0, min(idle_s, oldest_at + self.max_wait_s - now))


class ScoringEngine:
    def __init__(
        self,
        model: ScoringModel,
        *,
        batch_size: int = 256,
        max_streams: int = 100_000,
        warm_rows: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._max_streams = max_streams
        self._model = model
        self._warm_rows = warm_rows
        self.rule = DecisionRule.for_model(model, warm_rows=warm_rows)
        self.last_warm_windows = 0
        self._reset_windows()
        self.windows_scored = 0
        self.batches_run = 0

    def _reset_windows(self) -> None:
        meta = self._model.metadata
        self._windows = WindowStore(meta.window_length, meta.channels, max_streams=self._max_streams)
        self._buf = np.empty((self.batch_size, meta.window_length, len(meta.channels)), dtype=np.float32)
        self._n = 0
        self._segments: list[Segment] = []

    @property
    def model(self) -> ScoringModel:
        return self._model

    @property
    def metadata(self) -> ModelMetadata:
        return self._model.metadata

    @property
    def pending_count(self) -> int:
        return self._n

    @property
    def oldest_arrival(self) -> float | None:
        return self._segments[0].arrived_at if self._n else None

    @property
    def stream_count(self) -> int:
        return len(self._windows.streams)

    def _room(self, k: int) -> None:
        needed = self._n + k
        if needed > self._buf.shape[0]:
            grown = np.empty((max(needed, 2 * self._buf.shape[0]), *self._buf.shape[1:]), dtype=np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown

    def add(self, sample: Sample, arrived_at: float = 0.0) -> bool:
        """Add one sample; True when it completed a window (now pending). Raises MessageError to reject."""
        if len(sample.values) != len(self._windows.channels):
            raise ValueError(
                f"sample has {len(sample.values)} values, windows have {len(self._windows.channels)}"
            )
        ring = self._windows.ring(sample.stream, sample.timestamp)
        ring.append(sample.values, sample.timestamp)
        if not ring.is_full:
            return False
        self._room(1)
        self._buf[self._n] = ring.window()
        self._segments.append(Segment(sample.stream, self._n, (sample.timestamp,), arrived_at))
        self._n += 1
        return True

    def add_block(self, block: SampleBlock, arrived_at: float = 0.0) -> int:
        """Add many samples of one stream at once (vectorised); returns how many windows became pending.

        The block must be strictly increasing in time and start after the stream's last sample; otherwise
        it is refused whole (MessageError), like any other malformed message.
        """
        n = len(block)
        if n == 0:
            return 0
        stamps = block.timestamps
        # Plain slices, not np.diff: this runs once per message and numpy's wrappers cost microseconds.
        if n > 1 and not (stamps[1:] > stamps[:-1]).all():
            kind = DUPLICATE_TIMESTAMP if (stamps[1:] >= stamps[:-1]).all() else OUT_OF_ORDER
            raise MessageError(kind, f"block for stream {block.stream!r} is not strictly increasing in time")
        ring = self._windows.ring(block.stream, float(stamps[0]))
        w = self._windows.window_length
        previous = ring.recent(min(ring.count, w - 1))
        joined = np.concatenate([previous, block.values]) if previous.shape[0] else block.values
        total = ring.count + n
        ring.replace(joined[-w:], total, float(stamps[-1]))
        complete = min(n, total - w + 1)
        if complete <= 0:
            return 0
        windows = windows_view(joined, w, complete)
        self._room(complete)
        self._buf[self._n : self._n + complete] = windows
        self._segments.append(Segment(block.stream, self._n, stamps[-complete:], arrived_at))
        self._n += complete
        return complete

    def flush(self) -> ScoredBatch | None:
        """Score every pending window now with one ``session.run``."""
        if self._n == 0:
            return None
        n = self._n
        windows = self._buf[:n]
        scores = self._model.score(windows)
        if scores.shape != (n,):
            raise ValueError(f"model returned {scores.shape} scores for a batch of {n}")
        scores, non_finite = finite_scores(scores)
        meta = self._model.metadata
        flags, post_scores = self.rule.decide(self._segments, scores, windows)
        batch = ScoredBatch(
            segments=tuple(self._segments),
            scores=scores,
            windows=windows,
            threshold=meta.threshold,
            model_version=meta.model_version,
            flags=flags,
            post_scores=post_scores,
            decision_level=self.rule.decision_level,
            non_finite=non_finite,
        )
        self._n = 0
        self._segments = []
        self.windows_scored += n
        self.batches_run += 1
        return batch

    def process(self, samples: Iterable[Sample]) -> list[Decision]:
        """Convenience for tests and tools: add everything, scoring whenever a batch is full."""
        decisions: list[Decision] = []
        for sample in samples:
            if self.add(sample) and self._n >= self.batch_size:
                decisions.extend(self._flush_decisions())
        decisions.extend(self._flush_decisions())
        return decisions

    def _flush_decisions(self) -> list[Decision]:
        batch = self.flush()
        return [] if batch is None else batch.decisions()

    def swap_model(self, model: ScoringModel) -> ScoredBatch | None:
        """Switch models between micro-batches; pending windows are scored by the old model first.

        Window state is kept when the new model reads the same window shape and channels (no warm-up
        gap); otherwise it is reset, because old windows do not fit the new input.
        """
        batch = self.flush()
        if batch is not None:
            # The result views the buffer, which a reset would replace: detach it.
            batch = replace(batch, windows=batch.windows.copy())
        old, new = self._model.metadata, model.metadata
        self._model = model
        # Post-processing state is per model: its statistics are of the old model's scores. The new
        # rule replays the streams' recent rows through the new model instead of starting cold.
        old_rule = self.rule
        self.rule = DecisionRule.for_model(model, warm_rows=self._warm_rows)
        self.last_warm_windows = self.rule.warm_from(old_rule, model)
        if (old.window_length, old.channels) != (new.window_length, new.channels):
            self._reset_windows()
        return batch
