"""Delivery acknowledgements (docs/contracts.md §4): which events the cloud tells each device it holds.

A device in ack mode keeps an event in its spool until the cloud acknowledges it (an IPC publish only
means the nucleus took it). So an event is acknowledged only once its ingest finished: stored, archived
and its alert step done, which includes a redelivery found to be a duplicate of a stored event (the
device did not hear the first ack). A refused or failed event gets no ack: the device resends it, and a
redelivery resumes any unfinished step before it is acknowledged.

An ack that cannot be published is not an ingest failure: the event is stored, and failing the
invocation would only send it through Lambda's retries to the failure queue. The device resends it after
its ack timeout and that resend, a duplicate, is acknowledged. The failure is logged and counted.

No AWS calls here; the publisher behind ``AckPublisher`` is in ``lambdas.ingest.adapters``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from lambdas.ingest.errors import AckPublishError

ACK_SCHEMA: Final = "edgeml.ack/1"
# The contract's bound: a device may rely on never receiving more ids than this in one message.
MAX_ACK_IDS: Final = 100
ACK_QOS: Final = 1


def ack_topic(thing_name: str) -> str:
    return f"edge/{thing_name}/acks"


class StoredEvent(Protocol):
    """An anomaly event whose ingest finished (new or a duplicate): ``core.IngestResult`` is one."""

    @property
    def thing_name(self) -> str: ...

    @property
    def event_id(self) -> str: ...


@dataclass(frozen=True)
class AckMessage:
    thing_name: str
    topic: str
    event_ids: tuple[str, ...]

    @property
    def payload(self) -> bytes:
        body = {"schema": ACK_SCHEMA, "event_ids": list(self.event_ids)}
        return json.dumps(body, separators=(",", ":")).encode("utf-8")


def ack_messages(stored: Iterable[StoredEvent]) -> list[AckMessage]:
    """The ack messages for a batch's stored events: per thing, in arrival order, each id once,
    at most ``MAX_ACK_IDS`` ids per message."""
    by_thing: dict[str, dict[str, None]] = {}
    for event in stored:
        # A dict keeps first-seen order and drops an id delivered twice in the same batch.
        by_thing.setdefault(event.thing_name, {})[event.event_id] = None
    messages = []
    for thing_name, ids in by_thing.items():
        ordered = tuple(ids)
        for start in range(0, len(ordered), MAX_ACK_IDS):
            messages.append(
                AckMessage(
                    thing_name=thing_name,
                    topic=ack_topic(thing_name),
                    event_ids=ordered[start : start + MAX_ACK_IDS],
                )
            )
    return messages


class AckPublisher(Protocol):
    def publish(self, message: AckMessage) -> None:
        """Publish the message at QoS 1; raise ``AckPublishError`` when it cannot be."""
        ...


class AckMetrics(Protocol):
    def emit(self, report: AckReport) -> None:
        """Count the report's failed publishes (nothing to write when none failed)."""
        ...


@dataclass(frozen=True)
class FailedAck:
    message: AckMessage
    error: str


@dataclass(frozen=True)
class AckReport:
    published: tuple[AckMessage, ...]
    failed: tuple[FailedAck, ...]

    @property
    def acked_event_ids(self) -> tuple[str, ...]:
        return tuple(i for m in self.published for i in m.event_ids)

    @property
    def unacked_event_ids(self) -> tuple[str, ...]:
        return tuple(i for f in self.failed for i in f.message.event_ids)


def publish_acks(messages: Iterable[AckMessage], publisher: AckPublisher) -> AckReport:
    """Publish every message; one that fails is reported and the others still go out."""
    published: list[AckMessage] = []
    failed: list[FailedAck] = []
    for message in messages:
        try:
            publisher.publish(message)
        except AckPublishError as exc:
            # Caught here, not at the handler: one thing's failed ack must not hold back the others',
            # and none of them may fail the invocation (module docstring).
            failed.append(FailedAck(message=message, error=str(exc)))
        else:
            published.append(message)
    return AckReport(published=tuple(published), failed=tuple(failed))


def acknowledge(
    stored: Iterable[StoredEvent], publisher: AckPublisher, metrics: AckMetrics | None = None
) -> AckReport:
    """Ack a batch's stored events and count the acks that could not be published."""
    report = publish_acks(ack_messages(stored), publisher)
    if metrics is not None:
        metrics.emit(report)
    return report
