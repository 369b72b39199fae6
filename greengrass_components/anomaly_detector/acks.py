"""Acknowledgements from the cloud (docs/contracts.md §6c): parse them and delete the acked spool rows.

The cloud publishes ``{"schema": "edgeml.ack/1", "event_ids": [...]}`` on ``edge/<thing>/acks`` once the
events are durably stored. :meth:`AckHandler.handle` is the transport's message callback: it runs on the
transport's thread (paho's network thread, an IPC executor thread), so it never raises (an IPC callback
that raises kills its stream) and it touches the spool only through its lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .errors import AckError, SpoolError
from .logs import RateLimitedLog, get_logger
from .spool import Spool

log = get_logger("acks")

ACK_SCHEMA = "edgeml.ack/1"
MAX_ACK_IDS = 100
# Event ids are uuid4 hex (32 characters); the bound only keeps a hostile message from costing much.
MAX_EVENT_ID_CHARS = 128


def parse_ack(payload: bytes | str) -> tuple[str, ...]:
    """The event ids of one ack message, or :class:`AckError`."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise AckError("not_json", f"ack is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise AckError("bad_shape", f"ack must be a JSON object, got {type(document).__name__}")
    schema = document.get("schema")
    if schema != ACK_SCHEMA:
        raise AckError("bad_schema", f"ack schema must be {ACK_SCHEMA!r}, got {schema!r}")
    ids = document.get("event_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_ACK_IDS:
        size = len(ids) if isinstance(ids, list) else type(ids).__name__
        raise AckError("bad_ids", f"ack event_ids must be a list of 1..{MAX_ACK_IDS} ids, got {size}")
    for event_id in ids:
        if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID_CHARS:
            raise AckError(
                "bad_ids", f"ack event_ids must be non-empty strings of at most {MAX_EVENT_ID_CHARS} "
                f"characters, got {event_id!r:.80}"
            )  # fmt: skip
    return tuple(ids)


@dataclass(frozen=True)
class AckCounts:
    received: int = 0  # ack messages that followed the contract
    unknown_ids: int = 0  # ids in them that matched no spooled row (a duplicate's second ack, say)
    malformed: int = 0  # ack messages refused (not JSON, wrong schema, bad ids)


class AckHandler:
    """Deletes acknowledged rows from the spool; counts what it received and what it refused."""

    def __init__(
        self,
        spool: Spool,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._spool = spool
        self._lock = threading.Lock()
        self._counts = AckCounts()
        self._log = RateLimitedLog(log, clock=clock)
        self._wall_clock = wall_clock
        self._last_received_at: float | None = None

    def counts(self) -> AckCounts:
        with self._lock:
            return self._counts

    def last_received_at(self) -> float | None:
        """Wall-clock time of the last ack message that followed the contract (None: none yet): the
        forwarder gives up on a row only if acks of other events came while it waited for its own."""
        with self._lock:
            return self._last_received_at

    def handle(self, payload: bytes | str | None) -> None:
        """One ack message from the transport. Never raises: it runs in the transport's callback."""
        try:
            self._handle(payload if payload is not None else b"")
        except Exception as exc:  # noqa: BLE001 - a bug here must not kill the subscription
            self._log.error("ack_failed", "ack handling failed", error=repr(exc))

    def _handle(self, payload: bytes | str) -> None:
        try:
            event_ids = parse_ack(payload)
        except AckError as exc:
            with self._lock:
                self._counts = _add(self._counts, malformed=1)
            self._log.warning(exc.kind, "ack refused", error=str(exc), payload_bytes=len(payload))
            return
        try:
            result = self._spool.ack(event_ids)
        except SpoolError as exc:
            # The rows stay: they are sent again after the ack timeout and acked again.
            self._log.error("ack_spool_failed", "ack not applied: spool write failed", error=str(exc))
            return
        with self._lock:
            self._counts = _add(self._counts, received=1, unknown_ids=result.unknown)
            self._last_received_at = self._wall_clock()
        if result.unknown:
            log.debug("ack for events not in the spool", extra={"unknown_ids": result.unknown})


def _add(counts: AckCounts, *, received: int = 0, unknown_ids: int = 0, malformed: int = 0) -> AckCounts:
    return AckCounts(
        received=counts.received + received,
        unknown_ids=counts.unknown_ids + unknown_ids,
        malformed=counts.malformed + malformed,
    )
