"""Run counters: the end-of-run summary (file replay) and the periodic health message share them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunStats:
    model_version: str = ""
    samples_in: int = 0
    raw_bytes_in: int = 0
    windows_scored: int = 0
    batches_run: int = 0
    anomalous_windows: int = 0
    anomalies_forwarded: int = 0
    anomalies_suppressed: int = 0
    bytes_forwarded: int = 0
    publish_failures: int = 0
    out_of_order: int = 0
    model_swaps: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    anomaly_timestamps: list[str] = field(default_factory=list)

    def reject(self, kind: str) -> None:
        self.rejects[kind] = self.rejects.get(kind, 0) + 1

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "samples_in": self.samples_in,
            "windows_scored": self.windows_scored,
            "batches_run": self.batches_run,
            "anomalous_windows": self.anomalous_windows,
            "anomalies_forwarded": self.anomalies_forwarded,
            "anomalies_suppressed": self.anomalies_suppressed,
            "bytes_forwarded": self.bytes_forwarded,
            "raw_bytes_in": self.raw_bytes_in,
            "publish_failures": self.publish_failures,
            "out_of_order": self.out_of_order,
            "rejects": dict(self.rejects),
            "model_version": self.model_version,
            "model_swaps": self.model_swaps,
            "elapsed_s": round(elapsed_s, 6),
            "samples_per_s": round(self.samples_in / elapsed_s, 3) if elapsed_s > 0 else None,
            "anomaly_timestamps": list(self.anomaly_timestamps),
        }

    def health(self, *, thing_name: str, timestamp: str, elapsed_s: float) -> dict[str, Any]:
        """Compact heartbeat: counters only (no timestamp list, it grows without bound)."""
        body = self.summary(elapsed_s)
        body.pop("anomaly_timestamps")
        return {"schema": "edgeml.health/1", "thing_name": thing_name, "timestamp": timestamp, **body}
