"""Wiring: build the parts from the configuration; run the loop source -> scoring -> events -> spool.

The loop thread never touches the network on the way out: events are committed to the durable spool and a
separate :class:`Forwarder` thread sends them, so an outage slows nothing down and loses nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from .acks import AckCounts, AckHandler
from .batch import ScoredBatch
from .config import ComponentConfig
from .errors import MessageError, SpoolError
from .events import AnomalyEvent, EventBuilder, iso_utc
from .forwarder import Forwarder
from .hotswap import FileModelWatcher, ModelWatcher, read_model_ref
from .local_config import ENV_LOCAL_CONFIG_FILE, FileConfigIpc
from .logs import RateLimitedLog, get_logger
from .messages import MessageParser
from .model import LoadedModel, ModelLoader
from .postprocess import METADATA_KEY as POSTPROCESS_KEY
from .scoring import BatchPolicy, ScoringEngine
from .sources import FileReplaySource, Inbound, IpcSource, MqttSource, Source
from .spool import IN_MEMORY, OpenEvent, Spool, SpooledEvent, SpoolItem
from .stats import Distributions, LatencyRing, RunStats
from .transport import (
    DISK_SPOOL,
    InMemoryTransport,
    IpcIotCoreSubscription,
    IpcTransport,
    MqttTransport,
    SubscriptionState,
    Transport,
    nucleus_spool_storage,
)

log = get_logger("app")

# Bound the per-run list of forwarded timestamps: a device runs for months.
MAX_RECORDED_TIMESTAMPS = 100_000
IDLE_POLL_S = 0.5
HOUSEKEEPING_S = 0.05
# On stop, messages already taken off the network (MQTT PUBACKed, IPC delivered) are still processed.
MAX_DRAIN_MESSAGES = 100_000
# Reject kind for windows whose raw score was not finite (batch.finite_scores).
NON_FINITE_SCORE = "non_finite_score"


class ModelUpdates(Protocol):
    def take(self) -> LoadedModel | None: ...


class DetectorApp:
    """The loop. Everything it touches is passed in, so tests drive it with in-memory parts."""

    def __init__(
        self,
        *,
        engine: ScoringEngine,
        source: Source,
        spool: Spool,
        forwarder: Forwarder,
        events: EventBuilder,
        thing_name: str,
        anomaly_topic: str,
        health_topic: str,
        policy: BatchPolicy | None = None,
        health_interval_s: float = 0.0,
        drain_timeout_s: float = 10.0,
        model_updates: ModelUpdates | None = None,
        max_message_bytes: int = 1024 * 1024,
        delivery: Mapping[str, object] | None = None,
        acks: AckHandler | None = None,
        ack_subscription: Callable[[], SubscriptionState] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._source = source
        self._spool = spool
        self._forwarder = forwarder
        self._events = events
        self._thing_name = thing_name
        self._anomaly_topic = anomaly_topic
        self._health_topic = health_topic
        self.policy = policy if policy is not None else BatchPolicy(max_batch=engine.batch_size)
        self._health_interval_s = health_interval_s
        self._drain_timeout_s = drain_timeout_s
        self._model_updates = model_updates
        # What confirms a sent event (the heartbeat reports it): see transport.nucleus_spool_storage.
        self._delivery = dict(delivery) if delivery is not None else {}
        self._acks = acks
        # The ack subscription's state now (heartbeat delivery.ack_subscription); None: ack mode off.
        self._ack_subscription = ack_subscription
        self._max_message_bytes = max_message_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self._parser = self._new_parser()
        self._reject_log = RateLimitedLog(log, clock=clock)
        self.stats = RunStats(model_version=engine.metadata.model_version)
        self.latency = LatencyRing()
        self.distributions = Distributions(engine.metadata.channels)
        self._started = clock()
        self._period = _Period(at=self._started, samples=0, windows=0, anomalous=0)
        forwarder.on_sent = self._on_sent
        forwarder.on_gave_up = self._on_gave_up

    def _new_parser(self) -> MessageParser:
        return MessageParser(self._engine.metadata.channels, max_message_bytes=self._max_message_bytes)

    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def run(self, stop: threading.Event | None = None) -> RunStats:
        stop = stop if stop is not None else threading.Event()
        self._started = self._clock()
        self._period = _Period(at=self._started, samples=0, windows=0, anomalous=0)
        next_housekeeping = self._started
        next_health = self._started + self._health_interval_s
        self._forwarder.start()
        try:
            while not stop.is_set():
                now = self._clock()
                timeout = self.policy.wait_s(self._engine.oldest_arrival, now, IDLE_POLL_S)
                item = self._source.poll(timeout, self._parser)
                now = self._clock()
                if item is None:
                    if self._source.finished:
                        break
                else:
                    self._ingest(item, now)
                if self.policy.due(self._engine.pending_count, self._engine.oldest_arrival, now):
                    self._score(now)
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._housekeeping(now)
                    if self._health_interval_s > 0 and now >= next_health:
                        next_health = now + self._health_interval_s
                        self._publish_health(now)
            self._finish()
        finally:
            self._forwarder.close()
        return self.stats

    def _finish(self) -> None:
        """Stop or end of input: process what was already received, close events, try to send them."""
        for _ in range(MAX_DRAIN_MESSAGES):
            item = self._source.poll(0.0, self._parser)
            if item is None:
                break
            self._ingest(item, self._clock())
        now = self._clock()
        self._score(now)
        self._spool_events(self._events.close_all(self._engine.metadata.channels))
        self.stats.events_closed = self._events.events_closed
        self.stats.anomalies_suppressed = self._events.suppressed_total
        if not self._forwarder.drain(self._drain_timeout_s):
            log.warning(
                "stopping with events still in the spool; they are sent on the next start",
                extra={"spool_depth": self._spool.depth, "unsent": self._forwarder.unsent()},
            )
        if self._spool.awaiting_ack:
            log.info(
                "stopping with sent events not yet acknowledged; they stay in the spool and are sent "
                "again on the next start once their ack timeout has passed",
                extra={
                    "awaiting_ack": self._spool.awaiting_ack,
                    "ack_timeout_s": self._forwarder.ack_timeout_s,
                },
            )
        self.stats.publish_failures = self._forwarder.send_failures
        self.stats.input_dropped = self._input_dropped()
        self.stats.models_rejected = self._models_rejected()

    def _models_rejected(self) -> int:
        # The watcher owns the count; the run summary and the heartbeat report the same number.
        rejected = getattr(self._model_updates, "rejected", 0)
        return int(rejected) if isinstance(rejected, int) else 0

    def _reject(self, error: MessageError) -> None:
        self.stats.reject(error.kind)
        if error.kind == "out_of_order":
            self.stats.out_of_order += 1
        self._reject_log.warning(error.kind, "message rejected", error=str(error))

    def _ingest(self, item: Inbound, now: float) -> None:
        self.stats.raw_bytes_in += item.raw_bytes
        if item.error is not None:
            self._reject(item.error)
            return
        arrived = item.received_at if item.received_at is not None else now
        added = 0
        self.stats.samples_in += len(item.samples)
        for sample in item.samples:
            try:
                added += self._engine.add(sample, arrived)
            except MessageError as exc:
                self._reject(exc)
                if len(item.samples) > 1:
                    # A row batch is in time order (the parser checks), so only its first sample can be
                    # at or before the stream's newest: then the batch is refused whole (contracts §5).
                    break
                continue
            if self._engine.pending_count >= self.policy.max_batch:
                self._score(now)
        for block in item.blocks:
            self.stats.samples_in += len(block)
            try:
                added += self._engine.add_block(block, arrived)
            except MessageError as exc:
                self._reject(exc)
        if added:
            self.policy.observe(added, now)

    def _score(self, now: float) -> None:
        batch = self._engine.flush()
        if batch is not None:
            self._consume(batch, now)

    def _consume(self, batch: ScoredBatch, now: float) -> None:
        if batch.non_finite:
            self.stats.reject(NON_FINITE_SCORE, batch.non_finite)
            self._reject_log.warning(
                NON_FINITE_SCORE,
                "windows scored 0: the model's score overflowed on their values",
                windows=batch.non_finite,
            )
        self.stats.windows_scored = self._engine.windows_scored
        self.stats.batches_run = self._engine.batches_run
        self.latency.add_many(now - batch.arrived_at)
        self.distributions.add(batch.scores, batch.windows[:, -1, :], batch.threshold)
        anomalous = batch.anomalous()
        hits = np.flatnonzero(anomalous)
        self.stats.anomalous_windows += int(hits.size)
        if hits.size == 0 and not self._events.open_streams:
            return
        closed = self._offer_events(batch, hits, now)
        # Every event the batch closed and the checkpoint of every event it changed but left open, in one
        # spool transaction, committed before the forwarder sees any.
        self._spool_events(closed)

    def _offer_events(self, batch: ScoredBatch, hits: NDArray[np.intp], now: float) -> list[AnomalyEvent]:
        """Offer the event builder only the windows that can change an event, segment by segment.

        Those are the anomalous windows and, after each anomalous run, the next window of the same
        stream (the normal one that closes its event); a stream whose event is open when a segment
        starts also offers that segment's first window. Every other window is normal with no open
        event, which the builder would ignore: no per-window Python for the normal bulk of a batch.
        """
        events = self._events
        channels = self._engine.metadata.channels
        # The batch's anomalous windows (few), grouped by the segment they fall in.
        hits_of: dict[int, list[int]] = {}
        owners = np.searchsorted(batch.segment_starts, hits, side="right") - 1
        for k, index in zip(owners.tolist(), hits.tolist(), strict=True):
            hits_of.setdefault(k, []).append(index)
        closed: list[AnomalyEvent] = []
        for k, segment in enumerate(batch.segments):
            is_open = events.is_open(segment.stream)
            local = hits_of.get(k, [])
            if not local and not is_open:
                continue
            start, stop = segment.start, segment.stop
            offered = set(local)
            offered.update(i + 1 for i in local if i + 1 < stop)
            if is_open:
                offered.add(start)
            for index in sorted(offered):
                closed += events.offer(batch.decision(index, segment), channels, now)
        return closed

    def _spool_events(self, events: list[AnomalyEvent]) -> None:
        """Store closed events, and the checkpoints of open events changed since the last call, in ONE
        spool transaction: a crash at any moment leaves each event checkpointed or spooled."""
        checkpoints = self._events.checkpoints(self._engine.metadata.channels)
        if not events and not checkpoints:
            return
        created_at = self._wall_clock()
        max_bytes = self._events.max_event_bytes
        spooled: list[AnomalyEvent] = []
        items: list[SpoolItem] = []
        for event in events:
            try:
                payload = event.encode(max_bytes)
            except ValueError as exc:
                # One event that cannot be sent (a non-finite number, fields over the bound) must not take
                # the rest of the batch, or the loop, with it.
                self.stats.spool_dropped += 1
                log.error(  # noqa: TRY400 - expected failure, the message says what happened
                    "event lost: it cannot be encoded",
                    extra={"event_id": event.event_id, "stream": event.stream, "error": str(exc)},
                )
                continue
            spooled.append(event)
            items.append(SpoolItem(event.event_id, event.stream, self._anomaly_topic, payload, created_at))
        open_events: list[OpenEvent] = []
        for event in checkpoints.upserts:
            try:
                payload = event.encode(max_bytes)
            except ValueError:
                # Logged and counted when the event closes; until then its last good checkpoint stands.
                continue
            open_events.append(
                OpenEvent(event.event_id, event.stream, self._anomaly_topic, payload, created_at)
            )
        try:
            results = self._spool.put_many(items, open_events=open_events, closed_streams=checkpoints.deletes)
        except SpoolError as exc:
            # Disk full or broken: nothing durable is possible; say so loudly (once a minute, not once a
            # batch) and keep scoring. Unsaved checkpoints are offered again with the next batch.
            self.stats.spool_dropped += len(spooled)
            if spooled:
                self._reject_log.error(
                    "spool_write_failed",
                    "events lost: spool write failed",
                    error=str(exc),
                    event_ids=[event.event_id for event in spooled],
                )
            else:
                self._reject_log.error(
                    "spool_write_failed", "open events not checkpointed: spool write failed", error=str(exc)
                )
            return
        self._events.checkpoints_saved(checkpoints)
        stored = 0
        for event, result in zip(spooled, results, strict=True):
            self.stats.spool_dropped += result.dropped
            if result.stored:
                stored += 1
                # One structured line per event: operators grep event ids in the component log.
                log.info(
                    "anomaly event",
                    extra={
                        "event_id": event.event_id,
                        "stream": event.stream,
                        "start": event.start,
                        "end": event.end,
                        "peak_score": event.peak_score,
                        "windows": event.windows,
                    },
                )
        self.stats.anomalies_spooled += stored
        if items:
            # One wake-up of the forwarder per batch, after the commit.
            self._forwarder.notify()

    def _on_sent(self, event: SpooledEvent) -> None:
        # Runs on the forwarder thread; plain counter updates are atomic enough under the GIL.
        # A resend (ack mode: no ack in time) was counted when it was first sent (forwarder.resent).
        if event.topic != self._anomaly_topic or event.sent_at is not None:
            return
        self.stats.anomalies_forwarded += 1
        self.stats.bytes_forwarded += len(event.payload)
        if len(self.stats.anomaly_timestamps) < MAX_RECORDED_TIMESTAMPS:
            self.stats.anomaly_timestamps.append(str(orjson.loads(event.payload)["timestamp"]))

    def _on_gave_up(self, _event: SpooledEvent) -> None:
        # Forwarder thread, like _on_sent. An event given up unacked is lost like one the policy dropped.
        self.stats.spool_dropped += 1

    def _housekeeping(self, now: float) -> None:
        self._spool_events(self._events.expire(now, self._engine.metadata.channels))
        self._maybe_swap_model(now)

    def _maybe_swap_model(self, now: float) -> None:
        if self._model_updates is None:
            return
        model = self._model_updates.take()
        if model is None:
            return
        old_version = self._engine.metadata.model_version
        # Pending windows are the old model's: decide them first, then close every event they leave open,
        # so a merged event never mixes two models (closing first let them open one that the new model's
        # windows then joined).
        self._score(now)
        self._spool_events(self._events.close_all(self._engine.metadata.channels))
        batch = self._engine.swap_model(model)
        if batch is not None:  # nothing is pending after the flush above; kept for safety
            self._consume(batch, now)
        self._parser = self._new_parser()
        if model.metadata.channels != self.distributions.channels:
            self.distributions = Distributions(model.metadata.channels)
        self.stats.model_version = model.metadata.model_version
        self.stats.model_swaps += 1
        log.info(
            "model swapped",
            extra={
                "from": old_version,
                "to": model.metadata.model_version,
                "edge_postprocess": model.extra_metadata.get(POSTPROCESS_KEY),
                # Windows of recent rows replayed into the new model's post-processing (0: cold start).
                "warm_start_windows": self._engine.last_warm_windows,
            },
        )

    def health(self, now: float) -> dict[str, Any]:
        """The heartbeat body (and reset of the per-period counters)."""
        self.stats.events_closed = self._events.events_closed
        self.stats.anomalies_suppressed = self._events.suppressed_total
        self.stats.publish_failures = self._forwarder.send_failures
        period = self._period
        elapsed = max(now - period.at, 1e-9)
        windows = self.stats.windows_scored - period.windows
        anomalous = self.stats.anomalous_windows - period.anomalous
        body = {
            "schema": "edgeml.health/1",
            "thing_name": self._thing_name,
            "timestamp": iso_utc(self._wall_clock()),
            "uptime_s": round(now - self._started, 3),
            "period_s": round(elapsed, 3),
            "model_version": self.stats.model_version,
            "model_swaps": self.stats.model_swaps,
            "models_rejected": self._models_rejected(),
            "samples_in": self.stats.samples_in,
            "samples_per_s": round((self.stats.samples_in - period.samples) / elapsed, 3),
            "windows_scored": self.stats.windows_scored,
            # Cumulative, like windows_scored: the cloud diffs consecutive heartbeats (canary health).
            "anomalous_windows": self.stats.anomalous_windows,
            # The period's own count, so a rate over an idle period (0 windows) can be told from a 0 rate.
            "period_windows": windows,
            "anomaly_rate": round(anomalous / windows, 6) if windows else 0.0,
            "events": {
                "spooled": self.stats.anomalies_spooled,
                "forwarded": self.stats.anomalies_forwarded,
                "suppressed": self.stats.anomalies_suppressed,
                "publish_failures": self.stats.publish_failures,
            },
            "latency_ms": self.latency.percentiles_ms(),
            "batch_target": self.policy.target,
            "streams": self._engine.stream_count,
            "spool": {
                "depth": self._spool.depth,
                "bytes": self._spool.bytes_used,
                "max_bytes": self._spool.max_bytes,
                "policy": self._spool.policy,
                "dropped": self.stats.spool_dropped,
                "awaiting_ack": self._spool.awaiting_ack,
                "acks": self._ack_counters(),
            },
            "rejects": dict(self.stats.rejects),
            "delivery": {
                **self._delivery,
                "ack_subscription": self._ack_subscription() if self._ack_subscription else "off",
            },
            # Messages the network thread could not queue because the loop was behind (lost input).
            "input_dropped": self._input_dropped(),
            "distribution": self.distributions.summary(),
        }
        self._period = _Period(
            at=now,
            samples=self.stats.samples_in,
            windows=self.stats.windows_scored,
            anomalous=self.stats.anomalous_windows,
        )
        self.distributions.reset()
        return body

    def _ack_counters(self) -> dict[str, int]:
        counts = self._acks.counts() if self._acks is not None else AckCounts()
        return {
            "received": counts.received,
            "unknown_ids": counts.unknown_ids,
            "malformed": counts.malformed,
            "resent": self._forwarder.resent,
            "gave_up": self._forwarder.gave_up,
        }

    def _input_dropped(self) -> int:
        dropped = getattr(self._source, "dropped", 0)
        return dropped if isinstance(dropped, int) else 0

    def _publish_health(self, now: float) -> None:
        body = self.health(now)
        # orjson writes a non-finite number as null: the heartbeat stays RFC 8259 JSON whatever the inputs.
        self._forwarder.offer_health(self._health_topic, orjson.dumps(body))


@dataclass
class _Period:
    at: float
    samples: int
    windows: int
    anomalous: int


@dataclass
class Runtime:
    app: DetectorApp
    ipc: Any = None


def _connect_ipc() -> Any:
    """The one IPC client of the process (reads the nucleus socket path and SVCUID from the environment).

    Under the local device runner there is no nucleus: it names a configuration file instead.
    """
    local_config = os.environ.get(ENV_LOCAL_CONFIG_FILE)
    if local_config:
        return FileConfigIpc(Path(local_config))
    # Imported here: the SDK (awscrt) costs ~20 MB of RSS that a component without IPC does not need.
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2  # noqa: PLC0415

    return GreengrassCoreIPCClientV2()


def _load_model(
    config: ComponentConfig, loader: ModelLoader, ipc: Any, stack: contextlib.ExitStack
) -> tuple[LoadedModel, ModelUpdates | None]:
    """The first model, and where new ones come from: IPC configuration on a device, else the file."""
    if config.model_path is not None:
        model = loader.load(config.model_path, config.model_sha256)
        if config.model_poll_s <= 0:
            return model, None
        file_watcher = FileModelWatcher(config.model_path, loader=loader, poll_s=config.model_poll_s)
        file_watcher.start()
        stack.callback(file_watcher.close)
        return model, file_watcher
    assert config.kernel_root is not None  # guaranteed by ComponentConfig validation  # noqa: S101
    ref = read_model_ref(ipc)
    model = loader.load(ref.path(config.kernel_root), ref.sha256)
    watcher = ModelWatcher(ipc, loader=loader, kernel_root=config.kernel_root, current=ref)
    watcher.start()
    stack.callback(watcher.close)
    watcher.start_validation(ipc)
    return model, watcher


def _open_spool(config: ComponentConfig, stack: contextlib.ExitStack) -> Spool:
    """The durable spool, with the events a killed run left open moved into it."""
    if config.spool_path == IN_MEMORY:
        log.warning("spool is in memory: events not yet sent are lost if the process dies (use --spool)")
    spool = Spool(
        config.spool_path,
        max_bytes=config.spool_max_bytes,
        policy=config.spool_policy,
        ack_mode=config.ack_timeout_s > 0,
    )
    stack.callback(spool.close)
    # Before the first batch can checkpoint a new open event over an old one of the same stream.
    interrupted = spool.recover_open_events()
    if interrupted:
        log.warning(
            "events still open when the last run died are spooled, marked interrupted",
            extra={"interrupted_events": len(interrupted), "event_ids": list(interrupted)},
        )
    if spool.depth:
        log.info(
            "spooled events from an earlier run will be sent first",
            extra={"spool_depth": spool.depth, "awaiting_ack": spool.awaiting_ack},
        )
    return spool


def _open_transport(
    config: ComponentConfig, ipc: Any, stack: contextlib.ExitStack, acks: AckHandler | None
) -> tuple[Transport, dict[str, object], Callable[[], SubscriptionState] | None]:
    """The transport, subscribed to the acks in ack mode, what confirms a sent event (heartbeat), and the
    ack subscription's state (None with the ack mode off)."""
    transport: Transport
    delivery: dict[str, object] = {"transport": config.transport, "ack_timeout_s": config.ack_timeout_s}
    if config.transport == "ipc":
        transport = IpcTransport(ipc)
        nucleus_spool = nucleus_spool_storage(ipc)
        delivery["nucleus_spool"] = nucleus_spool
        # With acks, a row is deleted only once the cloud has the event: the nucleus's spool can lose
        # what it holds without losing an event (it is sent again after the ack timeout).
        if nucleus_spool != DISK_SPOOL and acks is None:
            log.warning(
                "events the nucleus accepted are kept in its spool, which is not on disk: an outage "
                "longer than it holds, or a nucleus restart, loses them "
                "(turn on ackTimeoutS, or deploy aws.greengrass.DiskSpooler: docs/deploy.md)",
                extra={"nucleus_spool": nucleus_spool},
            )
    elif config.transport == "mqtt":
        transport = MqttTransport(config.mqtt)
    else:
        transport = InMemoryTransport()
    stack.callback(transport.close)
    if acks is None:
        return transport, delivery, None
    # Subscribed before the forwarder sends anything, so no ack of this run is missed.
    state: Callable[[], SubscriptionState]
    if isinstance(transport, IpcTransport):
        subscription = IpcIotCoreSubscription(ipc, topic=config.ack_topic, on_message=acks.handle)
        stack.callback(subscription.close)

        def state() -> SubscriptionState:
            return subscription.state  # read at each heartbeat: it re-subscribes after a close

    else:
        transport.subscribe(config.ack_topic, acks.handle)
        state = functools.partial(transport.subscription_state, config.ack_topic)
    log.info(
        "ack mode: sent events stay in the spool until the cloud acks them",
        extra={"ack_topic": config.ack_topic, "ack_timeout_s": config.ack_timeout_s},
    )
    return transport, delivery, state


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

        model, updates = _load_model(config, loader, ipc, stack)
        log.info(
            "model loaded",
            extra={
                "model_version": model.metadata.model_version,
                "sha256": model.sha256,
                "window_length": model.metadata.window_length,
                "channels": list(model.metadata.channels),
                "threshold": model.metadata.threshold,
                # Decisions are post-processed when the model says so (contracts §1), else score > threshold.
                "edge_postprocess": model.extra_metadata.get(POSTPROCESS_KEY),
            },
        )

        spool = _open_spool(config, stack)
        acks = AckHandler(spool) if config.ack_timeout_s > 0 else None
        transport, delivery, ack_subscription = _open_transport(config, ipc, stack, acks)

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

        engine = ScoringEngine(
            model,
            batch_size=config.batch_size,
            max_streams=config.max_streams,
            warm_rows=config.warm_start_rows,
        )
        forwarder = Forwarder(
            spool,
            transport,
            ack_timeout_s=config.ack_timeout_s,
            ack_max_resends=config.ack_max_resends,
            last_ack_at=acks.last_received_at if acks is not None else None,
        )
        if isinstance(transport, MqttTransport):
            transport.on_connected = forwarder.retry_now
        app = DetectorApp(
            engine=engine,
            source=source,
            spool=spool,
            forwarder=forwarder,
            events=EventBuilder(
                thing_name=config.thing_name,
                burst=config.event_burst,
                rate_per_hour=config.events_per_hour,
                max_event_windows=config.max_event_windows,
                idle_close_s=config.event_idle_s,
                cooldown_s=config.cooldown_s,
                max_event_bytes=config.max_event_bytes,
            ),
            thing_name=config.thing_name,
            anomaly_topic=config.anomaly_topic,
            health_topic=config.health_topic,
            policy=BatchPolicy(
                max_batch=config.batch_size,
                max_wait_s=config.max_wait_ms / 1000.0,
                latency_budget_s=config.latency_budget_ms / 1000.0,
            ),
            health_interval_s=config.health_interval_s,
            drain_timeout_s=config.drain_timeout_s,
            model_updates=updates,
            max_message_bytes=config.max_message_bytes,
            delivery=delivery,
            acks=acks,
            ack_subscription=ack_subscription,
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
