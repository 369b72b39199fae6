"""Raw scores of a micro-batch -> decisions: ``score > threshold``, or the model's post-processing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .batch import ScoringModel, Segment, finite_scores
from .postprocess import METADATA_KEY, PostprocessConfig, Postprocessor
from .postprocess_block import BlockPostprocessor, supports
from .recent import RecentRows
from .windowing import windows_view


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
            windows = np.ascontiguousarray(windows_view(rows, w, rows.shape[0] - w + 1))
            scores, _ = finite_scores(model.score(windows))
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
