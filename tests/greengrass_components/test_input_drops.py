"""Input the component could not keep up with is lost at the source queue: the heartbeat must say so."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.sources import IpcSource
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .helpers import T0
from .test_app import make_app
from .test_sources import FakeIpcPubSub


def test_sensor_queue_drops_are_reported_in_heartbeat_and_summary(model_path: Path) -> None:
    ipc = FakeIpcPubSub()
    source = IpcSource(ipc, topic="sensors/#", max_queue=3)
    app = make_app(load_model(model_path), source, InMemoryTransport())  # type: ignore[arg-type]
    for i in range(5):  # the loop is not running: the queue holds 3, the network thread drops 2
        payload = json.dumps({"stream": "s", "timestamp": T0 + i, "values": {"value": 1.0}}).encode()
        message = SimpleNamespace(message=payload, context=SimpleNamespace(topic="sensors/s"))
        ipc.kwargs["on_stream_event"](SimpleNamespace(json_message=None, binary_message=message))

    assert app.health(0.0)["input_dropped"] == 2

    stop = threading.Event()
    stop.set()  # run once: drain what is queued, then finish
    stats = app.run(stop)
    assert stats.samples_in == 3
    assert stats.input_dropped == 2
    assert stats.summary(1.0)["input_dropped"] == 2
