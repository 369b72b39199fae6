"""Open events survive a crash: each is checkpointed in the spool transaction of the batch that changed it,
and the next start spools the checkpoint as an event marked ``interrupted`` (contracts §6).

Without the checkpoint an anomaly reached the spool only when its event closed (next normal window,
``max_event_windows``, idle time or a clean stop), so a ``kill -9`` in between lost it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import greengrass_components
from greengrass_components.anomaly_detector.batch import Decision
from greengrass_components.anomaly_detector.events import EventBuilder, iso_utc
from greengrass_components.anomaly_detector.messages import MessageParser, Sample
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.sources import Inbound
from greengrass_components.anomaly_detector.spool import Spool
from greengrass_components.anomaly_detector.transport import InMemoryTransport

from .helpers import T0, series, start_subscribed, wait_until
from .test_app import make_app

ARTIFACT_PARENT = Path(greengrass_components.__file__).parent
CH = ("value",)


class CrashingSource:
    """Gives its samples, then dies the way a crash does: no end of input, no clean stop."""

    finished = False

    def __init__(self, items: list[Sample]) -> None:
        self._items = list(items)

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound:
        if not self._items:
            raise RuntimeError("simulated crash")
        return Inbound(10, (self._items.pop(0),))

    def close(self) -> None:
        pass


def oscillating(n_normal: int, n_anomalous: int) -> list[float]:
    """Calm, then a sustained anomaly: every window from the first swing on is anomalous."""
    calm = series(n=n_normal, spike_at=None)
    return calm + [50.0 + (100.0 if i % 2 else -100.0) for i in range(n_anomalous)]


def test_an_event_open_when_the_loop_dies_is_spooled_on_the_next_start(
    tmp_path: Path, model_path: Path
) -> None:
    values = oscillating(20, 6)
    stream = [Sample("pump-1", T0 + 60.0 * i, (v,)) for i, v in enumerate(values)]
    spool = Spool(tmp_path / "spool.db")
    app = make_app(load_model(model_path), CrashingSource(stream), InMemoryTransport(), spool=spool)  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="simulated crash"):
        app.run()  # nothing closes the event: no normal window, no idle time, no _finish

    assert app.stats.anomalous_windows == 6
    assert app.stats.anomalies_spooled == 0  # the event is still open...
    assert spool.depth == 0
    restarted = Spool(tmp_path / "spool.db")
    recovered = restarted.recover_open_events()
    # ...yet it is on disk: the restart spools it like any other event.
    assert len(recovered) == 1
    (row,) = restarted.peek()
    body = json.loads(row.payload)
    assert row.event_id == body["event_id"] == recovered[0]
    assert body["interrupted"] is True
    assert body["windows"] == 6
    assert (body["start"], body["end"]) == (iso_utc(T0 + 60.0 * 20), iso_utc(T0 + 60.0 * 25))
    assert body["stream"] == "pump-1"
    assert restarted.recover_open_events() == ()  # recovered once, not on every start


def test_a_closed_event_replaces_its_checkpoint_in_one_transaction(tmp_path: Path, model_path: Path) -> None:
    values = series(n=30, spike_at=20)  # the next window is normal: the event closes
    transport = InMemoryTransport()
    spool = Spool(tmp_path / "spool.db")
    builder = EventBuilder(thing_name="gw-01")
    stream = [Sample("pump-1", T0 + 60.0 * i, (v,)) for i, v in enumerate(values)]
    app = make_app(load_model(model_path), CrashingSource(stream), transport, spool=spool, events=builder)  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="simulated crash"):
        app.run()

    assert builder.open_streams == ()
    assert app.stats.anomalies_spooled == 1
    # Closed and spooled in the transaction that dropped its checkpoint: a restart adds no duplicate.
    restarted = Spool(tmp_path / "spool.db")
    assert restarted.recover_open_events() == ()
    bodies = [json.loads(p.payload) for p in transport.published] + [
        json.loads(e.payload) for e in restarted.peek()
    ]
    assert len(bodies) == 1
    assert "interrupted" not in bodies[0]
    assert bodies[0]["end"] == iso_utc(T0 + 60.0 * 20)


def decision(ts: float, stream: str, *, anomalous: bool = True, score: float = 5.0) -> Decision:
    window = np.array([[1.0], [2.0], [70.0 + score]], dtype=np.float32)
    return Decision(stream, ts, score, 3.0, anomalous, "v1", window)


def test_only_streams_whose_open_event_changed_are_checkpointed() -> None:
    builder = EventBuilder(thing_name="gw")
    builder.offer(decision(1.0, "a"), CH)
    builder.offer(decision(1.0, "b"), CH)
    first = builder.checkpoints(CH)
    assert [(e.stream, e.interrupted, e.windows) for e in first.upserts] == [("a", True, 1), ("b", True, 1)]
    builder.checkpoints_saved(first)
    assert not builder.checkpoints(CH)  # nothing changed since: nothing to write

    builder.offer(decision(2.0, "a", score=9.0), CH)
    second = builder.checkpoints(CH)
    assert [(e.stream, e.windows, e.end, e.peak_score) for e in second.upserts] == [
        ("a", 2, iso_utc(2.0), 9.0)
    ]
    assert second.deletes == ()
    builder.checkpoints_saved(second)

    (closed,) = builder.offer(decision(3.0, "a", anomalous=False), CH)
    third = builder.checkpoints(CH)
    assert (third.upserts, third.deletes) == ((), ("a",))
    # The checkpoint and the event it becomes share one id: the cloud drops a duplicate by it.
    assert closed.event_id == second.upserts[0].event_id
    assert not closed.interrupted


def test_checkpoints_not_saved_are_offered_again() -> None:
    builder = EventBuilder(thing_name="gw")
    builder.offer(decision(1.0, "a"), CH)
    assert [e.stream for e in builder.checkpoints(CH).upserts] == ["a"]
    # The spool write failed (checkpoints_saved never called): the next batch writes it.
    assert [e.stream for e in builder.checkpoints(CH).upserts] == ["a"]


def test_an_event_the_rate_limit_will_hold_back_is_not_checkpointed() -> None:
    builder = EventBuilder(thing_name="gw", burst=1, rate_per_hour=0.0)
    builder.offer(decision(1.0, "a"), CH)
    assert builder.offer(decision(2.0, "a", anomalous=False), CH) != []  # the one token is spent
    builder.checkpoints_saved(builder.checkpoints(CH))
    builder.offer(decision(3.0, "a"), CH)
    pending = builder.checkpoints(CH)
    # A crash must not send what a clean run would have suppressed.
    assert pending.upserts == ()
    builder.checkpoints_saved(pending)
    assert builder.offer(decision(4.0, "a", anomalous=False), CH) == []
    assert builder.suppressed_total == 1


# --- a real process, killed with SIGKILL while its event is open, against a real broker -------------------


class Listener:
    """The cloud side: every anomaly event and heartbeat that reaches the broker."""

    def __init__(self, port: int) -> None:
        self.anomalies: list[dict[str, object]] = []
        self.heartbeats: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"cloud-open-{port}"
        )
        start_subscribed(self._client, port, [("edge/#", 1)], self._on_message)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        with self._lock:
            (self.heartbeats if message.topic.endswith("/health") else self.anomalies).append(body)

    def windows_scored(self) -> int:
        with self._lock:
            return max((int(h["windows_scored"]) for h in self.heartbeats), default=0)  # type: ignore[call-overload]

    def anomaly_bodies(self) -> list[dict[str, object]]:
        with self._lock:
            return list(self.anomalies)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def component(model: Path, *, csv: Path, spool: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "AWS_IOT_THING_NAME"}}
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                sys.executable, "-m", "anomaly_detector", "--thing-name", "gw-open", "--model", str(model),
                "--source", "file", "--file", str(csv), "--stream", "pump", "--speed", "12000",
                "--transport", "mqtt", "--mqtt-port", str(port), "--spool", str(spool),
                # Nothing but the kill may end the event: no idle close, heartbeats to see progress.
                "--event-idle-s", "3600", "--health-interval-s", "0.1", "--drain-timeout-s", "30",
            ],
            cwd=ARTIFACT_PARENT, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def test_kill_9_while_an_event_is_open_loses_no_event(
    tmp_path: Path, model_path: Path, mosquitto: int
) -> None:
    start = datetime(2013, 12, 2, 21, 15, tzinfo=UTC)
    values = series(n=31, spike_at=30)  # the last row before the pause is anomalous: the event opens
    stamps = [start + timedelta(minutes=5 * i) for i in range(31)]
    # The next row is 10 days later: at 12,000x the replay waits 72 s for it, with the event open.
    rows = [f"{t.isoformat()},{v:.4f}" for t, v in zip(stamps, values, strict=True)]
    rows.append(f"{(stamps[-1] + timedelta(days=10)).isoformat()},50.0")
    csv, spool, log = tmp_path / "data.csv", tmp_path / "spool.db", tmp_path / "component.log"
    csv.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    listener = Listener(mosquitto)
    proc = component(model_path, csv=csv, spool=spool, port=mosquitto, log=log)
    try:
        # 31 rows make 24 windows of 8, the last one anomalous; the heartbeat is built after its batch.
        assert wait_until(lambda: listener.windows_scored() >= 24, 30), log.read_text()[-2000:]
        assert listener.anomaly_bodies() == []  # open, so not sent yet
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,value\n")
    restarted = component(model_path, csv=empty, spool=spool, port=mosquitto, log=log)
    try:
        assert restarted.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert wait_until(lambda: len(listener.anomaly_bodies()) == 1, 10), (
            "the event open at the kill was lost"
        )
    finally:
        listener.close()
    (body,) = listener.anomaly_bodies()
    assert body["interrupted"] is True
    assert body["stream"] == "pump"
    assert body["start"] == body["end"] == body["timestamp"] == stamps[30].isoformat().replace("+00:00", "Z")
    assert body["windows"] == 1
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    recovered = [line for line in lines if line.get("interrupted_events")]
    assert [(line["level"], line["event_ids"]) for line in recovered] == [("WARNING", [body["event_id"]])]
    assert Spool(spool).depth == 0
