"""The scoring core: samples in, scored micro-batches out. No I/O, no clocks of its own.

Full windows are copied into one preallocated batch array and scored with ONE ``session.run`` per
micro-batch, never one per sample. A score is causal: the window ends at the sample that completed it.
:class:`BatchPolicy` decides when a batch is due: its target size follows the arrival rate (about
``latency_budget_s`` worth of windows), and ``max_wait_s`` bounds how long any window waits.
:class:`DecisionRule` turns a batch's raw scores into decisions: ``score > threshold`` (vectorised), or,
when the model carries ``edge_postprocess`` metadata, the online post-processing of ``postprocess.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from .errors import MessageError
from .messages import DUPLICATE_TIMESTAMP, OUT_OF_ORDER, Sample, SampleBlock
from .model import ModelMetadata
from .postprocess import METADATA_KEY, PostprocessConfig, Postprocessor
from .postprocess_block import BlockPostprocessor, supports
from .recent import RecentRows
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
    # With an ``edge_postprocess`` model: the post-processed score in [0, 1] and the level it is compared
    # to (``is_anomaly`` is ``post_score >= decision_level``); None for raw ``score > threshold`` decisions.
    post_score: float | None = None
    decision_level: float | None = None

    @property
    def deciding_score(self) -> float:
        """The score the decision was made on (events keep the window where it peaks)."""
        return self.score if self.post_score is None else self.post_score


class DecisionRule:
    """Raw scores of a batch -> anomaly flags (and post-processed scores), in batch order.

    Without post-processing a window is anomalous when ``score > threshold`` (strictly, per the contract),
    one vectorised comparison per batch. With a :class:`PostprocessConfig`, every window is fed in batch
    order (which is time order within a stream) to one per-stream :class:`Postprocessor`, normal windows
    included, so each post-processed score depends on that stream's past only, as in the evaluation.
    One rule per model: a model swap starts a new one (its statistics are in the old model's units),
    warmed up from the old rule's recent rows when ``warm_rows`` > 0 (see ``recent.py`` and
    :meth:`warm_from`).
    """

    # A stream whose first segment has at least this many windows is post-processed block-wise (numpy)
    # from then on; one that starts with single samples stays on the per-window reference, whose cost per
    # call is microseconds where numpy's fixed cost per block is tens of them. Both compute the same
    # scores, so the choice only moves time.
    BLOCK_MIN_WINDOWS = 32
    # Recent rows are kept for at most this many rows in all (streams beyond it start cold after a swap):
    # memory stays under 400 KB per channel and a swap's replay under ~0.4 s on the per-window path.
    WARM_BUDGET_ROWS = 100_000

    def __init__(
        self, threshold: float, postprocess: PostprocessConfig | None = None, *, warm_rows: int = 0
    ) -> None:
        if warm_rows < 0:
            raise ValueError(f"warm_rows must be >= 0, got {warm_rows}")
        self.threshold = threshold
        self.postprocess = postprocess
        # Only post-processing has state worth warming; a raw-threshold rule keeps no rows.
        self.warm_rows = min(warm_rows, self.WARM_BUDGET_ROWS) if postprocess is not None else 0
        self._recent: dict[str, RecentRows] = {}
        self._recent_rows_total = 0
        self._post = Postprocessor(postprocess, threshold) if postprocess is not None else None
        self._block = (
            BlockPostprocessor(postprocess, threshold)
            if postprocess is not None and supports(postprocess)
            else None
        )
        self._blockwise: dict[str, bool] = {}

    @classmethod
    def for_model(cls, model: ScoringModel, *, warm_rows: int = 0) -> DecisionRule:
        """The model's own rule: post-processing only when its metadata has ``edge_postprocess``."""
        extra: Mapping[str, str] = getattr(model, "extra_metadata", {})
        config = PostprocessConfig.from_metadata(extra) if METADATA_KEY in extra else None
        return cls(model.metadata.threshold, config, warm_rows=warm_rows)

    def warm_from(self, old: DecisionRule, model: ScoringModel) -> int:
        """Replay ``old``'s recent rows of every stream through ``model`` into this rule's post-processing.

        The replayed scores are discarded; what stays is the state (warm-up count, likelihood histories,
        damping) the new model would have built had it been running. Rows of another channel layout are
        dropped. Returns how many windows were replayed.
        """
        if self._post is None or not self.warm_rows:
            return 0
        meta = model.metadata
        w, channels = meta.window_length, len(meta.channels)
        replayed = 0
        for stream, ring in old._recent.items():
            if ring.channels != channels:
                continue
            rows = ring.rows()[-self.warm_rows :]
            self._keep(stream, rows)
            if rows.shape[0] < w:
                continue
            windows = np.ascontiguousarray(_windows_view(rows, w, rows.shape[0] - w + 1))
            scores = model.score(windows)
            if stream in old._blockwise:
                self._blockwise[stream] = old._blockwise[stream]
            self._decide_post([Segment(stream, 0, np.zeros(scores.shape[0]), 0.0)], scores, windows)
            replayed += int(scores.shape[0])
        return replayed

    def _keep(self, stream: str, rows: NDArray[np.float32]) -> None:
        """Remember ``rows`` (newest samples, time order) of ``stream``, within the row budget."""
        ring = self._recent.get(stream)
        if ring is None:
            if self._recent_rows_total + self.warm_rows > self.WARM_BUDGET_ROWS:
                return
            ring = self._recent[stream] = RecentRows(self.warm_rows, rows.shape[1])
            self._recent_rows_total += self.warm_rows
        if ring.channels == rows.shape[1]:
            ring.extend(rows)

    @property
    def decision_level(self) -> float | None:
        return None if self.postprocess is None else self.postprocess.decision_level

    def decide(
        self, segments: Sequence[Segment], scores: NDArray[np.float32], windows: NDArray[np.float32]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64] | None]:
        if self._post is None:
            return scores > self.threshold, None
        if self.warm_rows:
            for segment in segments:
                self._keep(segment.stream, windows[segment.start : segment.stop, -1, :])
        return self._decide_post(segments, scores, windows)

    def _decide_post(
        self, segments: Sequence[Segment], scores: NDArray[np.float32], windows: NDArray[np.float32]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        post = self._post
        assert post is not None  # callers check  # noqa: S101
        level = post.config.decision_level
        uses_values = post.config.uses_values
        out = np.empty(scores.shape[0], dtype=np.float64)
        raw: list[float] | None = None
        newest: list[list[float]] | None = None
        for segment in segments:
            stream, start, stop = segment.stream, segment.start, segment.stop
            blockwise = self._blockwise.get(stream)
            if blockwise is None:
                blockwise = self._block is not None and stop - start >= self.BLOCK_MIN_WINDOWS
                self._blockwise[stream] = blockwise
            if blockwise and self._block is not None:
                values = windows[start:stop, -1, :] if uses_values else None
                out[start:stop] = self._block.update_block(stream, scores[start:stop], values)
                continue
            if raw is None:
                raw = scores.tolist()
                # The value checks read each window's newest sample; skip building those rows when unused.
                newest = windows[:, -1, :].tolist() if uses_values else None
            for i in range(start, stop):
                out[i] = post.update(stream, raw[i], None if newest is None else newest[i])
        return out >= level, out


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
        windows = _windows_view(joined, w, complete)
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


def _windows_view(rows: NDArray[np.float32], w: int, k: int) -> NDArray[np.float32]:
    """The last ``k`` windows of ``w`` rows of ``rows`` ``[n, channels]``, as a ``[k, w, channels]`` view.

    A strided view straight from the ndarray constructor (about 1 us) for the usual contiguous float32
    rows; ``sliding_window_view`` (about 15 us of argument handling per call) otherwise.
    """
    if rows.dtype == np.float32 and rows.flags.c_contiguous:
        row_stride, item = rows.strides
        view: NDArray[np.float32] = np.ndarray(
            (k, w, rows.shape[1]),
            dtype=np.float32,
            buffer=rows,
            offset=(rows.shape[0] - w - k + 1) * row_stride,
            strides=(row_stride, row_stride, item),
        )
        return view
    # sliding_window_view gives [k, channels, w]; the model wants [k, w, channels].
    return sliding_window_view(rows, w, axis=0)[-k:].transpose(0, 2, 1)
