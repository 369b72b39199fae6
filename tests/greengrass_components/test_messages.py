from __future__ import annotations

import pytest

from greengrass_components.anomaly_detector.errors import MessageError
from greengrass_components.anomaly_detector.messages import MessageParser, Sample

PARSER = MessageParser(["temp", "vib"])


def test_single_message_orders_values_by_model_channels() -> None:
    payload = b'{"stream": "pump-1", "timestamp": 1700000000.5, "values": {"vib": 2, "temp": 71.3, "x": 9}}'
    assert PARSER.parse(payload) == [Sample("pump-1", 1700000000.5, (71.3, 2.0))]


def test_batch_message_and_iso_timestamps() -> None:
    payload = (
        '{"stream": "pump-1", "samples": ['
        '{"timestamp": "2013-12-02T21:15:00Z", "values": {"temp": 1, "vib": 2}},'
        '{"timestamp": "2013-12-02 21:20:00", "values": {"temp": 3, "vib": 4}}]}'
    )
    samples = PARSER.parse(payload)
    assert [s.timestamp for s in samples] == [1386018900.0, 1386019200.0]  # naive ISO is UTC
    assert [s.values for s in samples] == [(1.0, 2.0), (3.0, 4.0)]


def test_stream_falls_back_to_topic_stream() -> None:
    samples = PARSER.parse(b'{"timestamp": 1, "values": {"temp": 1, "vib": 2}}', default_stream="from-topic")
    assert samples[0].stream == "from-topic"


@pytest.mark.parametrize(
    ("payload", "kind", "message"),
    [
        (b"\xff\xfe", "not_utf8", "not valid UTF-8"),
        (b"{not json", "not_json", "not JSON"),
        (b"[1, 2]", "bad_shape", "must be a JSON object, got list"),
        (b'{"timestamp": 1, "values": {"temp": 1, "vib": 2}}', "bad_stream", "non-empty string 'stream'"),
        (b'{"stream": "s", "values": {"temp": 1, "vib": 2}}', "bad_timestamp", "no 'timestamp'"),
        (
            b'{"stream": "s", "timestamp": "noon", "values": {"temp": 1, "vib": 2}}',
            "bad_timestamp",
            "not ISO",
        ),
        (b'{"stream": "s", "timestamp": true, "values": {"temp": 1, "vib": 2}}', "bad_timestamp", "got bool"),
        (b'{"stream": "s", "timestamp": 1, "values": [1, 2]}', "bad_shape", "object 'values'"),
        (b'{"stream": "s", "timestamp": 1, "values": {"temp": 1}}', "missing_channel", "channel 'vib'"),
        (b'{"stream": "s", "timestamp": 1, "values": {"temp": "1", "vib": 2}}', "bad_value", "got str"),
        (b'{"stream": "s", "timestamp": 1, "values": {"temp": true, "vib": 2}}', "bad_value", "got bool"),
        (b'{"stream": "s", "timestamp": 1, "values": {"temp": NaN, "vib": 2}}', "non_finite", "not finite"),
        (b'{"stream": "s", "timestamp": 1, "values": {"temp": 1, "vib": -Infinity}}', "non_finite", "'vib'"),
        (b'{"stream": "s", "samples": []}', "bad_shape", "non-empty list"),
        (b'{"stream": "s", "samples": [3]}', "bad_shape", r"samples\[0\] must be an object"),
    ],
)
def test_malformed_messages_raise_typed_errors(payload: bytes, kind: str, message: str) -> None:
    with pytest.raises(MessageError, match=message) as info:
        PARSER.parse(payload)
    assert info.value.kind == kind
