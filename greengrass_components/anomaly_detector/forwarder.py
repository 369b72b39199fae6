"""Send spooled events, oldest first, one at a time; delete each only after the transport confirmed it.

One event in flight at a time is what keeps events of a stream in order across outages: a failed send is
retried (with capped exponential backoff) before anything newer is tried. During an outage the spool
grows and the app keeps scoring; nothing waits on the network except this thread.

Ack mode (``ack_timeout_s`` > 0, docs/contracts.md §6c): a confirmed publish marks the row sent instead of
deleting it, and the next row goes at once (throughput does not wait for the cloud's round trip); the
cloud's ack deletes the row (:class:`~.acks.AckHandler`, on the transport's thread). A row whose ack has
not come is due again after ``ack_timeout_s * 2**min(resends, 6)`` plus up to 10% jitter (a device offline
behind the nucleus must not push its whole spool into the nucleus again every timeout). Rows never sent
go before resends, and a pending heartbeat waits at most ``HEALTH_MAX_WAIT_S`` behind them.

A row is given up (deleted, counted as a drop) once it has waited for its ack ``ack_max_resends`` + 1
times while the cloud acked other events: a "strike" is a wait during which some ack came, so an event
the cloud refuses is not resent forever, while a device whose acks do not arrive at all (offline, cloud
down, subscription lost) never gives up on its events: there its spool and the full-spool policy bound
what is kept.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from .errors import SpoolError, TransportError
from .logs import RateLimitedLog, get_logger
from .spool import Spool, SpooledEvent
from .transport import Transport

log = get_logger("forwarder")

# Below this an ack timeout is shorter than the cloud's store-and-ack round trip: every event would be
# sent at least twice, and a tiny value spins the forwarder (docs/configuration.md ackTimeoutS).
MIN_ACK_TIMEOUT_S = 10.0
DEFAULT_ACK_MAX_RESENDS = 10
# The resend delay stops doubling here: 64 x a 60 s timeout is about an hour.
MAX_BACKOFF_EXPONENT = 6
RESEND_JITTER = 0.1
# A heartbeat offered while rows are due goes out before the next row once it has waited this long.
HEALTH_MAX_WAIT_S = 5.0
# Resends between two looks for new events (which go first): bounds how long a new event waits.
RESEND_BATCH = 10


def resend_delay_s(ack_timeout_s: float, resends: int, jitter: float) -> float:
    """How long after a send, its ``resends``-th resend, the row is due again without an ack;
    ``jitter`` in [0, 1) stretches it by up to ``RESEND_JITTER`` (spreads a fleet's resends)."""
    return float(ack_timeout_s * 2 ** min(resends, MAX_BACKOFF_EXPONENT) * (1 + RESEND_JITTER * jitter))


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
        ack_max_resends: int = DEFAULT_ACK_MAX_RESENDS,
        last_ack_at: Callable[[], float | None] | None = None,
        on_gave_up: Callable[[SpooledEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if ack_timeout_s != 0 and not ack_timeout_s >= MIN_ACK_TIMEOUT_S:
            raise ValueError(
                f"ack_timeout_s must be 0 (off) or >= {MIN_ACK_TIMEOUT_S:g}, got {ack_timeout_s}"
            )
        if ack_max_resends < 1:
            raise ValueError(f"ack_max_resends must be >= 1, got {ack_max_resends}")
        if ack_timeout_s > 0 and not spool.ack_mode:
            raise ValueError("ack mode needs a spool opened with ack_mode=True (it keeps the due order)")
        self._spool = spool
        self._transport = transport
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self.ack_timeout_s = ack_timeout_s
        self.ack_max_resends = ack_max_resends
        # Wall-clock time of the last ack message heard (AckHandler.last_received_at); None: none yet.
        self._last_ack_at = last_ack_at if last_ack_at is not None else lambda: None
        self._idle_poll_s = idle_poll_s
        self.on_sent = on_sent
        self.on_gave_up = on_gave_up
        self._clock = clock
        self._wall_clock = wall_clock
        self._jitter = jitter
        self._resend_log = RateLimitedLog(log, clock=clock)
        self._give_up_log = RateLimitedLog(log, clock=clock)
        self._wake = threading.Event()
        self._retry = threading.Event()
        # Set each time a pass finds the spool empty: drain() waits on it instead of polling.
        self._emptied = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        # Ack mode: publishes of rows sent before whose ack did not come within ack_timeout_s.
        self.resent = 0
        # Ack mode: rows deleted unacked after ack_max_resends resends while the cloud acked others.
        self.gave_up = 0
        self.send_failures = 0
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._health: tuple[str, bytes] | None = None
        self._health_offered_at = 0.0
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
        """Heartbeats are sent after pending events, but never more than ``HEALTH_MAX_WAIT_S`` behind
        them; best effort: a newer one replaces an unsent one (and keeps its place in the wait)."""
        if self._health is None:
            self._health_offered_at = self._clock()
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
        """Try to send everything due in the spool once, in order; False at the first failure."""
        # The last resend handled in this pass: the spool keeps the pass's place in the resend order by it.
        after: SpooledEvent | None = None
        while not self._stop.is_set():
            # At most RESEND_BATCH resends a batch: then a look for new events, which go first.
            batch = self._next_batch(after)
            if not batch:
                self._send_health()
                self._emptied.set()
                return True
            for event in batch:
                if self._stop.is_set():
                    return False
                if self._health is not None and self._clock() - self._health_offered_at >= HEALTH_MAX_WAIT_S:
                    self._send_health()
                resend = self.ack_timeout_s > 0 and event.sent_at is not None
                if resend:
                    after = event
                    # The batch is a snapshot: an ack may have deleted the row since.
                    if not self._spool.contains(event.seq):
                        continue
                    strike = self._acked_others_since(event)
                    if event.strikes + strike > self.ack_max_resends:
                        self._give_up(event)
                        continue
                else:
                    strike = False
                if not self._send(event, resend=resend, strike=strike):
                    return False
        return False

    def _send(self, event: SpooledEvent, *, resend: bool, strike: bool) -> bool:
        try:
            self._transport.publish(event.topic, event.payload)
        except TransportError as exc:
            self._failed(exc)
            return False
        if self.ack_timeout_s > 0:
            at = self._wall_clock()
            delay = resend_delay_s(self.ack_timeout_s, event.resends + resend, self._jitter())
            self._spool.mark_sent(event.seq, at=at, due_at=at + delay, strike=strike)
        else:
            # A row an earlier ack-mode run had sent is sent and deleted like any other: not a resend.
            self._spool.delete(event.seq)
        self.sent += 1
        if resend:
            self.resent += 1
            self._resend_log.warning(
                "resent",
                "event sent again: no ack within the ack timeout",
                event_id=event.event_id,
                resends=event.resends + 1,
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
        return True

    def _acked_others_since(self, event: SpooledEvent) -> bool:
        """Whether an ack came while this row waited for its own: the cloud answers, not for this row."""
        last_ack = self._last_ack_at()
        if last_ack is None or event.sent_at is None:
            return False
        # Both wall clock: an ack stamped while the clock ran ahead (later corrected) is in the future and
        # must not count for every row from then on, or an offline device would give its events up.
        return event.sent_at < last_ack <= self._wall_clock()

    def _give_up(self, event: SpooledEvent) -> None:
        if not self._spool.give_up(event.seq):
            return  # acked at the last moment
        self.gave_up += 1
        self._give_up_log.warning(
            "gave_up",
            "event given up: never acked although the cloud acked others",
            event_id=event.event_id,
            stream=event.stream,
            resends=event.resends,
            gave_up_total=self.gave_up,
        )
        if self.on_gave_up is not None:
            self.on_gave_up(event)

    def _next_batch(self, after: SpooledEvent | None) -> list[SpooledEvent]:
        if self.ack_timeout_s > 0:
            return self._spool.peek_due(
                100,
                now=self._wall_clock(),
                ack_timeout_s=self.ack_timeout_s,
                resend_limit=RESEND_BATCH,
                after=after,
            )
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
