"""Send spooled events, oldest first, one at a time; delete each only after the transport confirmed it.

One event in flight at a time is what keeps events of a stream in order across outages: a failed send is
retried (with capped exponential backoff) before anything newer is tried. During an outage the spool
grows and the app keeps scoring; nothing waits on the network except this thread.

Ack mode (``ack_timeout_s`` > 0, docs/contracts.md §6c): a confirmed publish marks the row sent instead of
deleting it, and the next row goes at once (throughput does not wait for the cloud's round trip); the
cloud's ack deletes the row (:class:`~.acks.AckHandler`, on the transport's thread). A row whose ack has
not come within ``ack_timeout_s`` is due again and is sent in ``seq`` order with the unsent rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import SpoolError, TransportError
from .logs import RateLimitedLog, get_logger
from .spool import Spool, SpooledEvent
from .transport import Transport

log = get_logger("forwarder")


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        transport: Transport,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 30.0,
        idle_poll_s: float = 1.0,
        on_sent: Callable[[SpooledEvent], None] | None = None,
        ack_timeout_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if ack_timeout_s < 0:
            raise ValueError(f"ack_timeout_s must be >= 0 (0 = off), got {ack_timeout_s}")
        self._spool = spool
        self._transport = transport
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self.ack_timeout_s = ack_timeout_s
        # In ack mode an idle pass also resends rows whose ack is overdue: poll at least that often.
        self._idle_poll_s = min(idle_poll_s, ack_timeout_s) if ack_timeout_s > 0 else idle_poll_s
        self.on_sent = on_sent
        self._clock = clock
        self._wall_clock = wall_clock
        self._resend_log = RateLimitedLog(log, clock=clock)
        self._wake = threading.Event()
        self._retry = threading.Event()
        # Set each time a pass finds the spool empty: drain() waits on it instead of polling.
        self._emptied = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        # Ack mode: publishes of rows sent before whose ack did not come within ack_timeout_s.
        self.resent = 0
        self.send_failures = 0
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._health: tuple[str, bytes] | None = None
        self.health_sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="forwarder", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A new event is in the spool: send it now rather than at the next idle poll."""
        self._wake.set()

    def retry_now(self) -> None:
        """The transport (re)connected: end the current backoff wait and send the spool now."""
        self._retry.set()

    def offer_health(self, topic: str, payload: bytes) -> None:
        """Heartbeats are sent after pending events, best effort: a newer one replaces an unsent one."""
        self._health = (topic, payload)
        self._wake.set()

    def _send_health(self) -> None:
        pending, self._health = self._health, None
        if pending is None:
            return
        try:
            self._transport.publish(*pending)
        except TransportError as exc:
            # Not spooled on purpose: a stale heartbeat has no value and must not crowd out events.
            log.debug("heartbeat not sent", extra={"error": str(exc)})
            return
        self.health_sent += 1

    def send_pending(self) -> bool:
        """Try to send everything in the spool once, in order; False at the first failure."""
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                self._send_health()
                self._emptied.set()
                return True
            for event in batch:
                if self._stop.is_set():
                    return False
                try:
                    self._transport.publish(event.topic, event.payload)
                except TransportError as exc:
                    self._failed(exc)
                    return False
                if self.ack_timeout_s > 0:
                    self._spool.mark_sent(event.seq, at=self._wall_clock())
                else:
                    self._spool.delete(event.seq)
                self.sent += 1
                if event.sent_at is not None:
                    self.resent += 1
                    self._resend_log.warning(
                        "resent",
                        "event sent again: no ack within the ack timeout",
                        event_id=event.event_id,
                        ack_timeout_s=self.ack_timeout_s,
                        resent_total=self.resent,
                    )
                if self._failing_since is not None:
                    log.info(
                        "delivery restored",
                        extra={"outage_s": round(self._clock() - self._failing_since, 3)},
                    )
                    self._failing_since = None
                if self.on_sent is not None:
                    self.on_sent(event)
        return False

    def _next_batch(self) -> list[SpooledEvent]:
        if self.ack_timeout_s > 0:
            return self._spool.peek_due(100, now=self._wall_clock(), ack_timeout_s=self.ack_timeout_s)
        return self._spool.peek(100)

    def unsent(self) -> int:
        """Rows to send now: every row, or in ack mode the unsent ones and those whose ack is overdue."""
        if self.ack_timeout_s <= 0:
            return self._spool.depth
        try:
            return self._spool.due_count(now=self._wall_clock(), ack_timeout_s=self.ack_timeout_s)
        except SpoolError as exc:
            log.error("spool read failed", extra={"error": str(exc)})  # noqa: TRY400 - expected
            return self._spool.depth - self._spool.awaiting_ack

    def _failed(self, exc: TransportError) -> None:
        self.send_failures += 1
        self.last_error = str(exc)
        if self._failing_since is None:
            # Logged once per outage, not once per retry: an outage can last hours.
            self._failing_since = self._clock()
            log.warning(
                "delivery failing, events stay in the spool",
                extra={"error": str(exc), "spool_depth": self._spool.depth},
            )

    def _loop(self) -> None:
        delay = self._retry_initial_s
        while not self._stop.is_set():
            try:
                ok = self.send_pending()
            except SpoolError as exc:
                log.error("spool read/delete failed", extra={"error": str(exc)})  # noqa: TRY400 - expected
                ok = False
            except Exception:
                # A bug (in a callback, say) must not end this thread silently: nothing would be sent
                # again until a restart. Logged with its traceback, then retried after the backoff.
                log.exception("forwarder pass failed")
                ok = False
            if ok:
                delay = self._retry_initial_s
                self._wake.wait(self._idle_poll_s)
                self._wake.clear()
            # Wait out the backoff unless the transport says it is back (or we are stopping).
            elif self._retry.wait(delay):
                self._retry.clear()
                delay = self._retry_initial_s
            else:
                delay = min(delay * 2, self._retry_max_s)

    def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is left to send and the last heartbeat was tried, at most ``timeout_s``; True
        when nothing is (False: spooled rows stay for the next run).

        In ack mode rows awaiting an ack are not waited for: they stay in the spool, and the next start
        sends them again once their timeout has passed (an ack after the stop is not heard).
        """
        deadline = self._clock() + timeout_s
        # A heartbeat offered just before the stop goes out too (best effort, like every heartbeat).
        while self.unsent() > 0 or self._health is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._emptied.clear()
            self._wake.set()
            # Woken as soon as the forwarder empties the spool; the 10 ms bound covers a pass that
            # emptied it between the depth check and the clear (and a forwarder that is not running).
            self._emptied.wait(min(0.01, remaining))
        return self.unsent() == 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._retry.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
