"""Run counters and compact distribution summaries, shared by the run summary and the heartbeat.

Everything here is bounded in memory whatever the run length: latencies in a ring of the last
``LATENCY_RING`` decisions, scores and inputs as running moments plus a fixed histogram per heartbeat
period (the cloud compares these between devices and over time to spot drift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .recent import write_ring

LATENCY_RING = 4096
# Score histogram edges in units of the threshold: where the mass sits relative to "anomalous".
SCORE_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


class LatencyRing:
    def __init__(self, size: int = LATENCY_RING) -> None:
        self._values = np.zeros(size, dtype=np.float64)
        self._next = 0
        self._count = 0

    def add_many(self, values: NDArray[np.float64]) -> None:
        self._next = write_ring(self._values, self._next, values)
        self._count = min(self._values.shape[0], self._count + values.shape[0])

    def percentiles_ms(self) -> dict[str, float | None]:
        if self._count == 0:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(self._values[: self._count], [50, 99])
        return {"p50": round(float(p50) * 1000, 3), "p99": round(float(p99) * 1000, 3)}


class Moments:
    """Running count / mean / std / min / max (per column) merged batch by batch.

    Sums are kept in float64 (and each batch is widened to float64 first): a device adds millions of
    rows between two heartbeats. The batch is reduced column-major (``[columns, n]``): numpy reduces
    along a contiguous axis several times faster than across a narrow one (``axis=0`` of ``[512, 2]``).
    """

    def __init__(self, columns: int) -> None:
        self.count = 0
        self._sum = np.zeros(columns)
        self._sumsq = np.zeros(columns)
        self._min = np.full(columns, np.inf)
        self._max = np.full(columns, -np.inf)

    def add(self, cols: NDArray[np.float64]) -> None:
        """One batch, column-major: ``cols`` ``[columns, n]``, C-contiguous float64."""
        if cols.shape[1] == 0:
            return
        self.count += cols.shape[1]
        self._sum += np.add.reduce(cols, axis=1)
        self._sumsq += np.add.reduce(cols * cols, axis=1)
        np.minimum(self._min, np.minimum.reduce(cols, axis=1), out=self._min)
        np.maximum(self._max, np.maximum.reduce(cols, axis=1), out=self._max)

    def summary(self) -> list[dict[str, float]]:
        if self.count == 0:
            return []
        mean = self._sum / self.count
        var = np.maximum(self._sumsq / self.count - mean**2, 0.0)
        return [
            {"mean": _r(m), "std": _r(math.sqrt(v)), "min": _r(lo), "max": _r(hi)}
            for m, v, lo, hi in zip(mean, var, self._min, self._max, strict=True)
        ]


def _r(value: float) -> float:
    return float(f"{float(value):.6g}")


@dataclass
class Distributions:
    """Per heartbeat period: score moments + histogram (relative to threshold), input moments per channel.

    Scores and the newest inputs are summarised together, as the columns of one ``[n, 1 + channels]``
    array: one set of reductions per micro-batch instead of one per statistic (this runs on every batch
    of the hot path).
    """

    channels: tuple[str, ...]
    moments: Moments = field(init=False)
    histogram: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self._edges_for: float | None = None
        self._edges = np.asarray(SCORE_EDGES, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self.moments = Moments(1 + len(self.channels))
        self.histogram = np.zeros(len(SCORE_EDGES) + 1, dtype=np.int64)

    def add(self, scores: NDArray[np.float32], newest_inputs: NDArray[np.float32], threshold: float) -> None:
        n = scores.shape[0]
        if n == 0:
            return
        cols = np.empty((1 + newest_inputs.shape[1], n), dtype=np.float64)
        cols[0] = scores
        cols[1:] = newest_inputs.T
        self.moments.add(cols)
        if self._edges_for != threshold:
            # Bin edges in score units, once per threshold (not a division of every score per batch).
            scale = threshold if 0 < threshold < math.inf else 1.0
            self._edges = np.asarray(SCORE_EDGES, dtype=np.float64) * scale
            self._edges_for = threshold
        self.histogram += np.bincount(
            self._edges.searchsorted(scores, side="right"), minlength=self.histogram.size
        )

    def summary(self) -> dict[str, Any]:
        columns = self.moments.summary()
        return {
            "windows": self.moments.count,
            "score": columns[0] if columns else None,
            "score_histogram": {
                "edges_x_threshold": list(SCORE_EDGES),
                "counts": [int(c) for c in self.histogram],
            },
            "inputs": dict(zip(self.channels, columns[1:], strict=False)),
        }


@dataclass
class RunStats:
    model_version: str = ""
    samples_in: int = 0
    raw_bytes_in: int = 0
    windows_scored: int = 0
    batches_run: int = 0
    anomalous_windows: int = 0
    events_closed: int = 0
    anomalies_spooled: int = 0
    anomalies_forwarded: int = 0
    anomalies_suppressed: int = 0
    bytes_forwarded: int = 0
    publish_failures: int = 0
    spool_dropped: int = 0
    out_of_order: int = 0
    model_swaps: int = 0
    models_rejected: int = 0
    input_dropped: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    anomaly_timestamps: list[str] = field(default_factory=list)

    def reject(self, kind: str, count: int = 1) -> None:
        self.rejects[kind] = self.rejects.get(kind, 0) + count

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "samples_in": self.samples_in,
            "windows_scored": self.windows_scored,
            "batches_run": self.batches_run,
            "anomalous_windows": self.anomalous_windows,
            "events_closed": self.events_closed,
            "anomalies_spooled": self.anomalies_spooled,
            "anomalies_forwarded": self.anomalies_forwarded,
            "anomalies_suppressed": self.anomalies_suppressed,
            "bytes_forwarded": self.bytes_forwarded,
            "raw_bytes_in": self.raw_bytes_in,
            "publish_failures": self.publish_failures,
            "spool_dropped": self.spool_dropped,
            "out_of_order": self.out_of_order,
            "rejects": dict(self.rejects),
            "model_version": self.model_version,
            "model_swaps": self.model_swaps,
            "models_rejected": self.models_rejected,
            "input_dropped": self.input_dropped,
            "elapsed_s": round(elapsed_s, 6),
            "samples_per_s": round(self.samples_in / elapsed_s, 3) if elapsed_s > 0 else None,
            "anomaly_timestamps": list(self.anomaly_timestamps),
        }
