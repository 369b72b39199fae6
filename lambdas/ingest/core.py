"""Ingest logic: store once, archive once, alert with a per-device rate limit. No AWS calls here.

Delivery from the device is at-least-once (QoS 1, spool, Lambda retries), so every step is idempotent:

1. The event item and an ``EVENT#<event_id>`` marker are written in one transaction, each only if absent.
   A redelivered event finds the marker and stores nothing.
2. The marker records which later steps finished (``archived``, ``alerted``). A redelivery after a crash
   between steps resumes the unfinished ones instead of losing them; a redelivery of a finished event is
   a no-op (``duplicate=True``, nothing archived or alerted).
3. Archive keys derive from the event (its own timestamp and id, not the receive time), so a retry writes
   the same key, and the archive refuses to overwrite.
4. Alerts: at most ``limit`` per device per fixed window of ``window_s`` seconds of receive time. Alerts
   over the limit are counted on the device's counter item and the count rides on the next alert sent.

Heartbeats: stored (overwrite = idempotent) with, when the heartbeat names a model whose training metrics
the lineage registry holds, a drift report against that training (``lambdas.ingest.drift``), which is
then emitted as metrics. Emitting after the write means a failed write, which Lambda retries, emits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Protocol

from lambdas.ingest.drift import DriftReport, TrainingProfile, drift_report
from lambdas.ingest.events import AnomalyEvent, Heartbeat
from lambdas.ingest.table import timestamp_key

Clock = Callable[[], float]  # epoch seconds
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Progress:
    """Which steps an already-stored event has completed."""

    archived: bool
    alerted: bool


@dataclass(frozen=True)
class AlertSlot:
    granted: bool
    # Alerts suppressed since the last one sent; the adapter resets the count when it grants a slot.
    suppressed_before: int


@dataclass(frozen=True)
class AlertPolicy:
    limit: int  # alerts per device per window, >= 1
    window_s: int
    # The counter item outlives its window so an unreported suppressed count survives a quiet spell;
    # after this long, the count is stale and DynamoDB may delete the item.
    counter_retention_s: int = 7 * SECONDS_PER_DAY


@dataclass(frozen=True)
class Alert:
    thing_name: str
    stream: str
    event_id: str
    timestamp: str
    score: float
    peak_score: float
    threshold: float
    model_version: str
    device_suppressed: int  # anomalies the device's cooldown held back before this event
    alerts_suppressed: int  # alerts this function held back (rate limit) since the previous alert
    archive_key: str

    def subject(self) -> str:
        # SNS subjects: ASCII, at most 100 characters, no line breaks.
        text = (
            f"Anomaly on {self.thing_name}/{self.stream}: score {self.peak_score:.3g} > {self.threshold:.3g}"
        )
        return text.encode("ascii", "replace").decode("ascii")[:100]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EventStore(Protocol):
    def put_new_event(self, event: AnomalyEvent, *, received_at: float) -> bool:
        """Store the event and its marker unless the event id is known; False means already stored."""
        ...

    def get_progress(self, event_id: str) -> Progress: ...

    def mark_archived(self, event_id: str, archive_key: str) -> None: ...

    def mark_alerted(self, event_id: str, outcome: str) -> None: ...

    def acquire_alert_slot(
        self, thing_name: str, *, window_start: int, limit: int, expires_at: int
    ) -> AlertSlot: ...

    def put_heartbeat(
        self, heartbeat: Heartbeat, *, received_at: float, expires_at: int, drift: DriftReport | None = None
    ) -> None: ...


class TrainingProfiles(Protocol):
    def profile(self, model_version: str) -> TrainingProfile | None:
        """The model's training profile, or None when the registry does not know it (or it lacks one)."""
        ...


class DriftMetrics(Protocol):
    def emit(self, report: DriftReport) -> None: ...


class Archive(Protocol):
    def put(self, key: str, body: bytes) -> bool:
        """Write the object unless the key exists; False means it already existed."""
        ...


class Alerts(Protocol):
    def publish(self, alert: Alert) -> str:
        """Send the alert; returns the message id."""
        ...


class AlertOutcome(StrEnum):
    SENT = "sent"
    RATE_LIMITED = "rate_limited"
    ALREADY_HANDLED = "already_handled"  # a redelivery of an event whose alert step had finished


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    thing_name: str
    duplicate: bool
    archive_key: str
    archived: bool  # this invocation wrote the archive object
    alert: AlertOutcome
    alerts_suppressed_reported: int
    alert_message_id: str | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"alert": str(self.alert)}


@dataclass(frozen=True)
class HeartbeatResult:
    thing_name: str
    timestamp: str
    expires_at: int
    drift: DriftReport | None = None
    # Why no drift report was made (empty when one was).
    drift_skipped: str = ""

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["drift"] = None if self.drift is None else self.drift.to_dict()
        return data


def archive_key(event: AnomalyEvent) -> str:
    day = event.timestamp.date()  # the event's own date, so every retry computes the same key
    return f"anomalies/{day.year:04d}/{day.month:02d}/{day.day:02d}/{event.thing_name}/{event.event_id}.json"


def ingest_anomaly(
    event: AnomalyEvent,
    *,
    store: EventStore,
    archive: Archive,
    alerts: Alerts,
    clock: Clock,
    policy: AlertPolicy,
) -> IngestResult:
    now = clock()
    is_new = store.put_new_event(event, received_at=now)
    progress = Progress(archived=False, alerted=False) if is_new else store.get_progress(event.event_id)
    key = archive_key(event)

    archived = False
    if not progress.archived:
        # False when a concurrent or earlier attempt already wrote the (identical) object.
        archived = archive.put(key, event.raw_json.encode("utf-8"))
        store.mark_archived(event.event_id, key)

    outcome = AlertOutcome.ALREADY_HANDLED
    reported = 0
    message_id: str | None = None
    if not progress.alerted:
        window_start = int(now // policy.window_s) * policy.window_s
        slot = store.acquire_alert_slot(
            event.thing_name,
            window_start=window_start,
            limit=policy.limit,
            expires_at=window_start + policy.window_s + policy.counter_retention_s,
        )
        if slot.granted:
            reported = slot.suppressed_before
            message_id = alerts.publish(_alert_for(event, key, alerts_suppressed=reported))
            outcome = AlertOutcome.SENT
        else:
            outcome = AlertOutcome.RATE_LIMITED
        store.mark_alerted(event.event_id, str(outcome))

    return IngestResult(
        event_id=event.event_id,
        thing_name=event.thing_name,
        duplicate=not is_new,
        archive_key=key,
        archived=archived,
        alert=outcome,
        alerts_suppressed_reported=reported,
        alert_message_id=message_id,
    )


def ingest_heartbeat(
    heartbeat: Heartbeat,
    *,
    store: EventStore,
    clock: Clock,
    ttl_days: int,
    training: TrainingProfiles | None = None,
    metrics: DriftMetrics | None = None,
) -> HeartbeatResult:
    now = clock()
    # Expiry from receive time, not the device's clock: a device with a wrong clock must not write
    # heartbeats that expire at once or never.
    expires_at = int(now) + ttl_days * SECONDS_PER_DAY
    report, skipped = heartbeat_drift(heartbeat, training)
    store.put_heartbeat(heartbeat, received_at=now, expires_at=expires_at, drift=report)
    if report is not None and metrics is not None:
        metrics.emit(report)
    return HeartbeatResult(
        thing_name=heartbeat.thing_name,
        timestamp=timestamp_key(heartbeat.timestamp),
        expires_at=expires_at,
        drift=report,
        drift_skipped=skipped,
    )


def heartbeat_drift(
    heartbeat: Heartbeat, training: TrainingProfiles | None
) -> tuple[DriftReport | None, str]:
    """The heartbeat's drift report, or None and the reason there is none."""
    if training is None:
        return None, "no lineage registry configured"
    if heartbeat.model_version is None:
        return None, "the heartbeat names no model_version"
    if heartbeat.distribution is None:
        return None, "the heartbeat carries no distribution"
    profile = training.profile(heartbeat.model_version)
    if profile is None:
        return None, f"no training metrics recorded for model {heartbeat.model_version}"
    return drift_report(heartbeat.model_version, heartbeat.distribution, profile), ""


def _alert_for(event: AnomalyEvent, key: str, *, alerts_suppressed: int) -> Alert:
    return Alert(
        thing_name=event.thing_name,
        stream=event.stream,
        event_id=event.event_id,
        timestamp=timestamp_key(event.timestamp),
        score=event.score,
        peak_score=event.peak_score,
        threshold=event.threshold,
        model_version=event.model_version,
        device_suppressed=event.suppressed,
        alerts_suppressed=alerts_suppressed,
        archive_key=key,
    )
