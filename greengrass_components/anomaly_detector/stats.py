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

LATENCY_RING = 4096
# Score histogram edges in units of the threshold: where the mass sits relative to "anomalous".
SCORE_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


class LatencyRing:
    def __init__(self, size: int = LATENCY_RING) -> None:
        self._values = np.zeros(size, dtype=np.float64)
        self._next = 0
        self._count = 0

    def add_many(self, values: NDArray[np.float64]) -> None:
        size = self._values.shape[0]
        values = values[-size:]
        k = values.shape[0]
        end = self._next + k
        if end <= size:
            self._values[self._next : end] = values
        else:
            first = size - self._next
            self._values[self._next :] = values[:first]
            self._values[: k - first] = values[first:]
        self._next = end % size
        self._count = min(size, self._count + k)

    def percentiles_ms(self) -> dict[str, float | None]:
        if self._count == 0:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(self._values[: self._count], [50, 99])
        return {"p50": round(float(p50) * 1000, 3), "p99": round(float(p99) * 1000, 3)}


class Moments:
    """Running count / mean / std / min / max (per column) merged batch by batch."""

    def __init__(self, columns: int) -> None:
        self.count = 0
        self._sum = np.zeros(columns)
        self._sumsq = np.zeros(columns)
        self._min = np.full(columns, np.inf)
        self._max = np.full(columns, -np.inf)

    def add(self, rows: NDArray[Any]) -> None:
        if rows.shape[0] == 0:
            return
        rows64 = rows.astype(np.float64, copy=False)
        self.count += rows.shape[0]
        self._sum += rows64.sum(axis=0)
        self._sumsq += np.square(rows64).sum(axis=0)
        self._min = np.minimum(self._min, rows64.min(axis=0))
        self._max = np.maximum(self._max, rows64.max(axis=0))

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
    """Per heartbeat period: score moments + histogram (relative to threshold), input moments per channel."""

    channels: tuple[str, ...]
    scores: Moments = field(init=False)
    inputs: Moments = field(init=False)
    histogram: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.scores = Moments(1)
        self.inputs = Moments(len(self.channels))
        self.histogram = np.zeros(len(SCORE_EDGES) + 1, dtype=np.int64)

    def add(self, scores: NDArray[np.float32], newest_inputs: NDArray[np.float32], threshold: float) -> None:
        self.scores.add(scores.reshape(-1, 1))
        self.inputs.add(newest_inputs)
        scale = threshold if threshold > 0 else 1.0
        self.histogram += np.bincount(
            np.searchsorted(SCORE_EDGES, scores / scale, side="right"), minlength=len(SCORE_EDGES) + 1
        )[: len(SCORE_EDGES) + 1]

    def summary(self) -> dict[str, Any]:
        score = self.scores.summary()
        return {
            "windows": self.scores.count,
            "score": score[0] if score else None,
            "score_histogram": {
                "edges_x_threshold": list(SCORE_EDGES),
                "counts": [int(c) for c in self.histogram],
            },
            "inputs": dict(zip(self.channels, self.inputs.summary(), strict=False)),
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
