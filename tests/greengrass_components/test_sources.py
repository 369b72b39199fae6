from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from greengrass_components.anomaly_detector.errors import SourceError
from greengrass_components.anomaly_detector.messages import MessageParser, Sample
from greengrass_components.anomaly_detector.sources import (
    FileReplaySource,
    Inbound,
    IpcSource,
    MqttSource,
    Source,
)
from greengrass_components.anomaly_detector.transport import MqttSettings

NAB = "timestamp,value\n2013-12-02 21:15:00,73.96\n2013-12-02 21:20:00,74.93\n\n2013-12-02 21:25:00,nan\n"


def drain(source: Source, parser: MessageParser) -> list[Inbound]:
    out = []
    while not source.finished:
        item = source.poll(1.0, parser)
        if item is not None:
            out.append(item)
    return out


def test_nab_csv_maps_single_value_column_to_model_channel(tmp_path: Path) -> None:
    path = tmp_path / "nab.csv"
    path.write_text(NAB)
    items = drain(FileReplaySource(path, stream="machine_temperature"), MessageParser(["temperature"]))

    assert [i.samples for i in items[:2]] == [
        (Sample("machine_temperature", 1386018900.0, (73.96,)),),
        (Sample("machine_temperature", 1386019200.0, (74.93,)),),
    ]
    assert items[2].error is not None
    assert items[2].error.kind == "non_finite"
    assert [i.raw_bytes for i in items] == [
        len(b"2013-12-02 21:15:00,73.96\n"),
        26,
        len(b"2013-12-02 21:25:00,nan\n"),
    ]


def test_multi_column_csv_uses_named_channels(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text("vib,timestamp,temp\n1.5,100,20\noops,101,21\n1,2\n")
    items = drain(FileReplaySource(path, stream="m"), MessageParser(["temp", "vib"]))
    assert items[0].samples == (Sample("m", 100.0, (20.0, 1.5)),)
    assert items[1].error is not None
    assert items[1].error.kind == "bad_value"
    assert items[2].error is not None
    assert items[2].error.kind == "bad_shape"


def test_csv_without_needed_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("time,value\n1,2\n")
    with pytest.raises(SourceError, match="has no 'timestamp' column"):
        FileReplaySource(path, stream="s")
    path.write_text("timestamp,a,b\n1,2,3\n")
    with pytest.raises(SourceError, match=r"no column for channels \['temp'\]"):
        FileReplaySource(path, stream="s").poll(1.0, MessageParser(["temp"]))


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open replay file"):
        FileReplaySource(tmp_path / "nope.csv", stream="s")


def test_replay_paces_rows_by_timestamp_and_speed(tmp_path: Path) -> None:
    path = tmp_path / "nab.csv"
    path.write_text("timestamp,value\n0,1\n300,2\n600,3\n")
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    source = FileReplaySource(path, stream="s", speed=300.0, clock=lambda: now[0], sleep=sleep)
    parser = MessageParser(["value"])
    assert source.poll(10.0, parser) is not None  # first row is due at once
    assert source.poll(0.25, parser) is None  # second row is due at t=1s: not within 0.25s
    second = source.poll(10.0, parser)
    assert second is not None
    assert second.samples[0].values == (2.0,)
    assert now[0] == pytest.approx(1.0)
    assert sleeps == pytest.approx([0.25, 0.75])


def test_mqtt_source_receives_from_real_broker(mosquitto: int) -> None:
    source = MqttSource(MqttSettings(port=mosquitto), topic="sensors/#")
    publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", mosquitto)
    publisher.loop_start()
    try:
        body = b'{"timestamp": 5, "values": {"value": 1.5}}'
        publisher.publish("sensors/pump-7", body, qos=1).wait_for_publish(5)
        publisher.publish("sensors/pump-7", b"garbage", qos=1).wait_for_publish(5)
        parser = MessageParser(["value"])
        first = source.poll(5.0, parser)
        second = source.poll(5.0, parser)
        assert first is not None
        assert (first.raw_bytes, first.samples) == (len(body), (Sample("pump-7", 5.0, (1.5,)),))
        assert first.received_at is not None  # latency is measured from the network arrival
        assert second is not None
        assert second.error is not None
        assert second.error.kind == "not_json"
        assert source.poll(0.05, parser) is None
        assert source.finished is False
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        source.close()


class FakeIpcPubSub:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.operation = SimpleNamespace(closed=False)
        self.operation.close = lambda: setattr(self.operation, "closed", True)

    def subscribe_to_topic(self, **kwargs: Any) -> tuple[object, object]:
        self.kwargs = kwargs
        return object(), self.operation


def test_ipc_source_handles_json_and_binary_messages() -> None:
    ipc = FakeIpcPubSub()
    source = IpcSource(ipc, topic="sensors/#")
    assert ipc.kwargs["topic"] == "sensors/#"
    on_event = ipc.kwargs["on_stream_event"]
    context = SimpleNamespace(topic="sensors/line-3")
    document = {"timestamp": 7, "values": {"value": 2.5}}
    on_event(
        SimpleNamespace(json_message=SimpleNamespace(message=document, context=context), binary_message=None)
    )
    on_event(
        SimpleNamespace(json_message=None, binary_message=SimpleNamespace(message=b"[]", context=context))
    )

    parser = MessageParser(["value"])
    first = source.poll(1.0, parser)
    assert first is not None
    assert first.samples == (Sample("line-3", 7.0, (2.5,)),)
    assert first.raw_bytes == len(json.dumps(document, separators=(",", ":")))
    second = source.poll(1.0, parser)
    assert second is not None
    assert second.error is not None
    assert second.error.kind == "bad_shape"
    # stream errors are counted and keep the subscription open
    assert ipc.kwargs["on_stream_error"](RuntimeError("boom")) is False
    assert source.stream_errors == 1
    source.close()
    assert ipc.operation.closed


def test_queue_source_drops_and_counts_when_full() -> None:
    ipc = FakeIpcPubSub()
    source = IpcSource(ipc, topic="sensors/#", max_queue=1)
    event = SimpleNamespace(json_message=None, binary_message=SimpleNamespace(message=b"{}", context=None))
    ipc.kwargs["on_stream_event"](event)
    ipc.kwargs["on_stream_event"](event)
    assert source.dropped == 1
