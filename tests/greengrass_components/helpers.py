"""Shared test helpers (plain functions and small fakes, no pytest magic)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt

from greengrass_components.anomaly_detector.errors import MessageError
from greengrass_components.anomaly_detector.messages import MessageParser, Sample, SampleBlock
from greengrass_components.anomaly_detector.model import LoadedModel
from greengrass_components.anomaly_detector.sources import Inbound

T0 = 1_700_000_000.0
SPIKE_INDEX = 20


def series(n: int = 40, spike_at: int | None = SPIKE_INDEX, spike: float = 10.0) -> list[float]:
    """A gentle sine (|last - mean| < 1 always) with one injected spike."""
    values = [50.0 + 0.5 * math.sin(i / 3.0) for i in range(n)]
    if spike_at is not None:
        values[spike_at] += spike
    return values


def samples(values: Sequence[float], stream: str = "pump-1", step_s: float = 60.0) -> list[Sample]:
    return [Sample(stream, T0 + i * step_s, (v,)) for i, v in enumerate(values)]


class CountingSession:
    """Wraps a real onnxruntime session and records the batch size of every run."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batch_sizes: list[int] = []

    def run(self, output_names: Any, input_feed: Mapping[str, Any], run_options: Any = None) -> list[Any]:
        self.batch_sizes.append(len(input_feed["window"]))
        return list(self.inner.run(output_names, input_feed, run_options))


def counting(model: LoadedModel) -> tuple[LoadedModel, CountingSession]:
    session = CountingSession(model.session)
    return replace(model, session=session), session


class ListSource:
    """A finite in-memory source of raw payloads (bytes) or ready samples."""

    def __init__(self, items: Sequence[bytes | Sample]) -> None:
        self._items = list(items)
        self.closed = False

    @property
    def finished(self) -> bool:
        return not self._items

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound | None:
        if not self._items:
            return None
        item = self._items.pop(0)
        if isinstance(item, Sample):
            return Inbound(10, (item,))
        try:
            parsed = parser.parse(item)
            if isinstance(parsed, SampleBlock):
                return Inbound(len(item), blocks=(parsed,))
            return Inbound(len(item), tuple(parsed))
        except MessageError as exc:
            return Inbound(len(item), error=exc)

    def close(self) -> None:
        self.closed = True


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0, poll_s: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())


def start_subscribed(
    client: mqtt.Client, port: int, topics: list[tuple[str, int]], on_message: Callable[..., None]
) -> None:
    """Connect ``client`` to the local broker, subscribe ``topics`` on each (re)connect, await a SUBACK."""
    subscribed = threading.Event()
    client.on_connect = lambda c, *_a: c.subscribe(topics)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(5), "no SUBACK"
