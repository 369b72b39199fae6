"""Constants, a settable clock and the messages the IoT rules hand the ingest Lambda."""

from __future__ import annotations

from typing import Any

REGION = "us-east-1"
TABLE = "edgeml-events"
BUCKET = "edgeml-archive"
THING = "sensor-gw-01"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    """A settable clock: tests move time across alert windows."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def anomaly_payload(**overrides: Any) -> dict[str, Any]:
    """What the anomalies rule hands the Lambda: the device's event (contracts §6) plus thing_from_topic."""
    payload: dict[str, Any] = {
        "schema": "edgeml.anomaly/1",
        "event_id": "3f2a9c1d7b8e4f60a1b2c3d4e5f60718",
        "thing_name": THING,
        "stream": "machine_temperature",
        "timestamp": "2013-12-11T06:00:00Z",
        "start": "2013-12-11T05:55:00Z",
        "end": "2013-12-11T06:00:00Z",
        "score": 12.3,
        "peak_score": 12.3,
        "threshold": 4.1,
        "model_version": "20261124T201500Z-3f2a9c1d",
        "channels": ["value"],
        "values": [[71.3], [72.0], [95.5]],
        "suppressed": 2,
        "thing_from_topic": THING,
    }
    payload.update(overrides)
    return payload


def heartbeat_payload(**overrides: Any) -> dict[str, Any]:
    """What the health rule hands the Lambda (shape of the edge component's RunStats.health)."""
    payload: dict[str, Any] = {
        "schema": "edgeml.health/1",
        "thing_name": THING,
        "timestamp": "2023-11-14T22:13:00Z",
        "samples_in": 6000,
        "windows_scored": 5969,
        "anomalies_forwarded": 3,
        "publish_failures": 0,
        "rejects": {"non_finite": 2},
        "model_version": "20261124T201500Z-3f2a9c1d",
        "elapsed_s": 60.0,
        "samples_per_s": None,
        "thing_from_topic": THING,
    }
    payload.update(overrides)
    return payload
