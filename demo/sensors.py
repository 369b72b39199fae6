"""The simulated sensors of the demo: each device's slice of a NAB series, published to its local topics."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

BATCH = 100  # samples per message: the columnar batch form of contracts §5


@dataclass(frozen=True)
class SeriesSlice:
    stream: str
    timestamps: list[float]
    values: list[float]


def epoch(text: str) -> float:
    """NAB timestamps are naive UTC ("2013-12-02 21:15:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def load_series(path: Path) -> tuple[list[float], list[float]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [epoch(r["timestamp"]) for r in rows], [float(r["value"]) for r in rows]


def split(stream_prefix: str, timestamps: list[float], values: list[float], parts: int) -> list[SeriesSlice]:
    """Consecutive, non-overlapping slices that together hold every sample once."""
    n = len(values)
    bounds = [n * i // parts for i in range(parts + 1)]
    return [
        SeriesSlice(f"{stream_prefix}-{i + 1}", timestamps[a:b], values[a:b])
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def messages(piece: SeriesSlice) -> list[bytes]:
    out = []
    for start in range(0, len(piece.values), BATCH):
        body = {
            "stream": piece.stream,
            "timestamps": piece.timestamps[start : start + BATCH],
            "values": {"value": piece.values[start : start + BATCH]},
        }
        out.append(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    return out


def publish(host: str, port: int, feeds: dict[str, SeriesSlice], timeout_s: float = 30.0) -> dict[str, int]:
    """Publish each thing's slice to ``sensors/<thing>/<stream>`` (QoS 1); returns samples per thing."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-sensors")
    client.max_inflight_messages_set(100)
    client.connect(host, port)
    client.loop_start()
    try:
        pending = []
        for thing, piece in feeds.items():
            topic = f"sensors/{thing}/{piece.stream}"
            pending += [client.publish(topic, payload, qos=1) for payload in messages(piece)]
        for info in pending:
            info.wait_for_publish(timeout=timeout_s)
            if not info.is_published():
                raise TimeoutError(f"sensor message {info.mid} not acknowledged within {timeout_s} s")
    finally:
        client.loop_stop()
        client.disconnect()
    return {thing: len(piece.values) for thing, piece in feeds.items()}
