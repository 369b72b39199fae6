"""Turn what the demo saw into the report's data: series, scores, anomalies, labels, bytes, lineage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from report import Anomaly, ReportData, StreamView

from .cloud_listener import Received
from .sensors import SeriesSlice, epoch


def offline_scores(model_path: Path, values: Sequence[float]) -> tuple[list[int], list[float], float]:
    """Score every full window with the deployed model (the device forwards anomalies only, not scores).

    Returns the index of the sample that completes each window, the scores, and the model's threshold.
    """
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    length, threshold = int(meta["window_length"]), float(meta["threshold"])
    series = np.asarray(values, dtype=np.float32)
    if series.size < length:
        return [], [], threshold
    windows = np.lib.stride_tricks.sliding_window_view(series, length)[:, :, None]
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    scores = np.concatenate(
        [session.run(["score"], {"window": windows[i : i + 4096]})[0] for i in range(0, len(windows), 4096)]
    )
    return list(range(length - 1, series.size)), [float(s) for s in scores], threshold


def _to_epoch(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def build_report_data(
    *,
    series: str,
    model_path: Path,
    feeds: Mapping[str, SeriesSlice],
    received: Sequence[Received],
    stats: Mapping[str, Mapping[str, Any]],
    states: Mapping[str, Mapping[str, str]],
    windows: Sequence[tuple[datetime, datetime]],
    lineage_extra: Mapping[str, str],
) -> ReportData:
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    label_windows = [(epoch(a.isoformat()), epoch(b.isoformat())) for a, b in windows]
    streams = []
    for thing, piece in feeds.items():
        events = [m.json() for m in received if m.topic == f"edge/{thing}/anomalies"]
        health_bytes = sum(len(m.payload) for m in received if m.topic == f"edge/{thing}/health")
        anomaly_bytes = sum(len(m.payload) for m in received if m.topic == f"edge/{thing}/anomalies")
        idx, scores, threshold = offline_scores(model_path, piece.values)
        first, last = piece.timestamps[0], piece.timestamps[-1]
        streams.append(
            StreamView(
                stream=piece.stream,
                thing_name=thing,
                timestamps=piece.timestamps,
                values=piece.values,
                score_timestamps=[piece.timestamps[i] for i in idx],
                scores=scores,
                threshold=threshold,
                anomalies=[
                    Anomaly(
                        timestamp=_to_epoch(e["timestamp"]),
                        score=float(e["score"]),
                        event_id=str(e["event_id"]),
                    )
                    for e in events
                ],
                label_windows=[(a, b) for a, b in label_windows if b >= first and a <= last],
                samples_in=int(stats[thing]["samples_in"]),
                raw_bytes=int(stats[thing]["raw_bytes_in"]),
                anomaly_bytes=anomaly_bytes,
                health_bytes=health_bytes,
                lifecycle_states=dict(states.get(thing, {})),
            )
        )
    lineage = [
        ("model version", meta.get("model_version", "")),
        ("detector", meta.get("detector", "")),
        ("window length", meta.get("window_length", "")),
        ("threshold", meta.get("threshold", "")),
        ("training data sha256", meta.get("training_data_sha256", "")),
        ("model created at", meta.get("created_at", "")),
        *lineage_extra.items(),
    ]
    return ReportData(
        title="edgeml demo: anomaly detection at the edge",
        series=series,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        streams=streams,
        lineage=lineage,
    )
