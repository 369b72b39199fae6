"""Wiring: build the parts from the configuration; run the loop source -> scoring -> events -> transport."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from .config import ComponentConfig
from .errors import TransportError
from .events import EventBuilder, iso_utc
from .hotswap import ModelWatcher, read_model_ref
from .logs import get_logger
from .messages import MessageParser
from .model import LoadedModel, ModelLoader
from .scoring import Decision, ScoringEngine
from .sources import FileReplaySource, IpcSource, MqttSource, Source
from .stats import RunStats
from .transport import InMemoryTransport, IpcTransport, MqttTransport, Transport

log = get_logger("app")

# Bound the per-run list of forwarded timestamps: a device runs for months.
MAX_RECORDED_TIMESTAMPS = 100_000
IDLE_POLL_S = 0.5


class ModelUpdates(Protocol):
    def take(self) -> LoadedModel | None: ...


class DetectorApp:
    """The loop. Everything it touches is passed in, so tests drive it with in-memory parts."""

    def __init__(
        self,
        *,
        engine: ScoringEngine,
        source: Source,
        transport: Transport,
        events: EventBuilder,
        thing_name: str,
        anomaly_topic: str,
        health_topic: str,
        max_wait_s: float = 0.2,
        health_interval_s: float = 0.0,
        model_updates: ModelUpdates | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._source = source
        self._transport = transport
        self._events = events
        self._thing_name = thing_name
        self._anomaly_topic = anomaly_topic
        self._health_topic = health_topic
        self._max_wait_s = max_wait_s
        self._health_interval_s = health_interval_s
        self._model_updates = model_updates
        self._clock = clock
        self._wall_clock = wall_clock
        self._parser = MessageParser(engine.metadata.channels)
        self.stats = RunStats(model_version=engine.metadata.model_version)
        self._started = 0.0

    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def run(self, stop: threading.Event | None = None) -> RunStats:
        stop = stop if stop is not None else threading.Event()
        self._started = self._clock()
        oldest_pending_at: float | None = None
        next_health = self._started + self._health_interval_s
        while not stop.is_set():
            now = self._clock()
            timeout = IDLE_POLL_S
            if oldest_pending_at is not None:
                timeout = max(0.0, min(timeout, oldest_pending_at + self._max_wait_s - now))
            item = self._source.poll(timeout, self._parser)
            if item is None:
                if self._source.finished:
                    break
            else:
                self.stats.raw_bytes_in += item.raw_bytes
                if item.error is not None:
                    self.stats.reject(item.error.kind)
                    log.debug("message rejected", extra={"kind": item.error.kind, "error": str(item.error)})
                for sample in item.samples:
                    self.stats.samples_in += 1
                    self._handle(self._engine.add(sample))
            now = self._clock()
            if self._engine.pending_count == 0:
                oldest_pending_at = None
            elif oldest_pending_at is None:
                oldest_pending_at = now
            elif now - oldest_pending_at >= self._max_wait_s:
                # Latency bound: a slow stream must not hold a window hostage until the batch fills.
                self._handle(self._engine.flush())
                oldest_pending_at = None
            self._maybe_swap_model()
            if self._health_interval_s > 0 and now >= next_health:
                self._publish_health()
                next_health = now + self._health_interval_s
        self._handle(self._engine.flush())
        self.stats.out_of_order = self._engine.out_of_order
        return self.stats

    def _maybe_swap_model(self) -> None:
        if self._model_updates is None:
            return
        model = self._model_updates.take()
        if model is None:
            return
        old_version = self._engine.metadata.model_version
        self._handle(self._engine.swap_model(model))
        self._parser = MessageParser(model.metadata.channels)
        self.stats.model_version = model.metadata.model_version
        self.stats.model_swaps += 1
        log.info("model swapped", extra={"from": old_version, "to": model.metadata.model_version})

    def _handle(self, decisions: list[Decision]) -> None:
        if not decisions:
            return
        self.stats.windows_scored = self._engine.windows_scored
        self.stats.batches_run = self._engine.batches_run
        channels = self._engine.metadata.channels
        for decision in decisions:
            if not decision.is_anomaly:
                continue
            self.stats.anomalous_windows += 1
            event = self._events.offer(decision, channels)
            if event is None:
                self.stats.anomalies_suppressed += 1
                continue
            payload = event.to_json_bytes()
            try:
                self._transport.publish(self._anomaly_topic, payload)
            except TransportError as exc:
                # No durable outbox yet: the event is lost, and counted so health shows it.
                self.stats.publish_failures += 1
                self._log_publish_failure(exc, event.event_id)
                continue
            self.stats.anomalies_forwarded += 1
            self.stats.bytes_forwarded += len(payload)
            if len(self.stats.anomaly_timestamps) < MAX_RECORDED_TIMESTAMPS:
                self.stats.anomaly_timestamps.append(event.timestamp)
            log.info(
                "anomaly forwarded",
                extra={"stream": event.stream, "timestamp": event.timestamp, "score": event.score},
            )

    @staticmethod
    def _log_publish_failure(exc: TransportError, event_id: str) -> None:
        log.error("anomaly publish failed", extra={"error": str(exc), "event_id": event_id})

    def _publish_health(self) -> None:
        self.stats.out_of_order = self._engine.out_of_order
        body = self.stats.health(
            thing_name=self._thing_name, timestamp=iso_utc(self._wall_clock()), elapsed_s=self.elapsed_s()
        )
        try:
            self._transport.publish(self._health_topic, json.dumps(body, separators=(",", ":")).encode())
        except TransportError as exc:
            log.warning("health publish failed", extra={"error": str(exc)})


@dataclass
class Runtime:
    app: DetectorApp
    ipc: Any = None


def _connect_ipc() -> Any:
    """The one IPC client of the process (reads the nucleus socket path and SVCUID from the environment)."""
    return GreengrassCoreIPCClientV2()


@contextlib.contextmanager
def build_runtime(
    config: ComponentConfig,
    *,
    loader: ModelLoader | None = None,
    ipc_factory: Callable[[], Any] = _connect_ipc,
) -> Iterator[Runtime]:
    """Build every part from the configuration; closes them all (in reverse order) on exit."""
    loader = loader if loader is not None else ModelLoader()
    with contextlib.ExitStack() as stack:
        needs_ipc = config.source == "ipc" or config.transport == "ipc" or config.model_path is None
        ipc: Any = ipc_factory() if needs_ipc else None
        if ipc is not None:
            stack.callback(ipc.close)

        watcher: ModelWatcher | None = None
        if config.model_path is not None:
            model = loader.load(config.model_path, config.model_sha256)
        else:
            assert config.kernel_root is not None  # guaranteed by ComponentConfig validation  # noqa: S101
            ref = read_model_ref(ipc)
            model = loader.load(ref.path(config.kernel_root), ref.sha256)
            watcher = ModelWatcher(ipc, loader=loader, kernel_root=config.kernel_root, current=ref)
            watcher.start()
            stack.callback(watcher.close)
        log.info(
            "model loaded",
            extra={
                "model_version": model.metadata.model_version,
                "sha256": model.sha256,
                "window_length": model.metadata.window_length,
                "channels": list(model.metadata.channels),
                "threshold": model.metadata.threshold,
            },
        )

        transport: Transport
        if config.transport == "ipc":
            transport = IpcTransport(ipc)
        elif config.transport == "mqtt":
            transport = MqttTransport(config.mqtt)
        else:
            transport = InMemoryTransport()
        stack.callback(transport.close)

        source: Source
        if config.source == "file":
            # Both guaranteed by ComponentConfig validation.
            assert config.file_path is not None  # noqa: S101
            assert config.stream is not None  # noqa: S101
            source = FileReplaySource(config.file_path, stream=config.stream, speed=config.speed)
        elif config.source == "mqtt":
            # A distinct client id: two connections with one id would keep kicking each other off.
            settings = replace(config.mqtt, client_id=f"{config.mqtt.client_id}-sensors")
            source = MqttSource(settings, topic=config.sensor_topic)
        else:
            source = IpcSource(ipc, topic=config.sensor_topic)
        stack.callback(source.close)

        app = DetectorApp(
            engine=ScoringEngine(model, batch_size=config.batch_size),
            source=source,
            transport=transport,
            events=EventBuilder(thing_name=config.thing_name, cooldown_s=config.cooldown_s),
            thing_name=config.thing_name,
            anomaly_topic=config.anomaly_topic,
            health_topic=config.health_topic,
            max_wait_s=config.max_wait_ms / 1000.0,
            health_interval_s=config.health_interval_s,
            model_updates=watcher,
        )
        yield Runtime(app=app, ipc=ipc)


def run(config: ComponentConfig, stop: threading.Event | None = None) -> dict[str, Any]:
    """Build, run until the source ends or ``stop`` is set, and return the run summary."""
    with build_runtime(config) as runtime:
        stats = runtime.app.run(stop)
        summary = stats.summary(runtime.app.elapsed_s())
    summary["thing_name"] = config.thing_name
    if config.stats_json is not None:
        config.stats_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
