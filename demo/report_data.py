"""Turn what the demo saw into the report's data: series, scores, anomalies, labels, bytes, lineage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from greengrass_components.anomaly_detector.batch import Segment
from greengrass_components.anomaly_detector.decision_rule import DecisionRule
from greengrass_components.anomaly_detector.postprocess import METADATA_KEY, PostprocessConfig
from report import Anomaly, ReportData, StreamView

from .cloud_listener import Received
from .sensors import SeriesSlice, epoch


@dataclass(frozen=True)
class OfflineScores:
    """The deployed model's scores of one stream, recomputed offline (the device forwards anomalies only).

    ``index[i]`` is the sample that completes window ``i``. With an ``edge_postprocess`` model,
    ``post_scores`` are what the component decided on (0-1, anomalous at ``>= decision_level``);
    otherwise both are None and the decision is ``raw > threshold``.
    """

    index: list[int]
    raw: list[float]
    threshold: float
    post_scores: list[float] | None = None
    decision_level: float | None = None


def offline_scores(model_path: Path, values: Sequence[float], stream: str = "stream") -> OfflineScores:
    """Score every full window with the deployed model, then decide as the component does.

    The post-processing is the component's own :class:`DecisionRule`, fed the windows in stream order
    (its state depends on every earlier window, normal ones included), so the curve is the one the
    device compared to the decision level.
    """
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    length, threshold = int(meta["window_length"]), float(meta["threshold"])
    config = PostprocessConfig.from_metadata(meta) if METADATA_KEY in meta else None
    level = config.decision_level if config is not None else None
    series = np.asarray(values, dtype=np.float32)
    if series.size < length:
        return OfflineScores([], [], threshold, [] if config else None, level)
    windows = np.lib.stride_tricks.sliding_window_view(series, length)[:, :, None]
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rule = DecisionRule(threshold, config)
    raw: list[float] = []
    post: list[float] | None = [] if config is not None else None
    for i in range(0, len(windows), 4096):
        chunk = windows[i : i + 4096]
        scores = np.asarray(session.run(["score"], {"window": chunk})[0], dtype=np.float32).reshape(-1)
        raw += [float(s) for s in scores]
        segment = Segment(stream, 0, np.arange(i, i + len(chunk), dtype=np.float64), 0.0)
        _flags, chunk_post = rule.decide([segment], scores, chunk)
        if post is not None and chunk_post is not None:
            post += [float(s) for s in chunk_post]
    return OfflineScores(list(range(length - 1, series.size)), raw, threshold, post, level)


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
        scored = offline_scores(model_path, piece.values, piece.stream)
        first, last = piece.timestamps[0], piece.timestamps[-1]
        streams.append(
            StreamView(
                stream=piece.stream,
                thing_name=thing,
                timestamps=piece.timestamps,
                values=piece.values,
                score_timestamps=[piece.timestamps[i] for i in scored.index],
                scores=scored.post_scores if scored.post_scores is not None else scored.raw,
                threshold=scored.threshold,
                decision_level=scored.decision_level,
                anomalies=[
                    Anomaly(
                        timestamp=_to_epoch(e["timestamp"]),
                        score=float(e["score"]),
                        post_score=float(e["post_score"]) if e.get("post_score") is not None else None,
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
        ("edge post-processing", meta.get("edge_postprocess", "none (decides score > threshold)")),
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
