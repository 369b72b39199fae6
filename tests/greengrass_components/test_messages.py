from __future__ import annotations

import json

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import MessageError
from greengrass_components.anomaly_detector.messages import MessageParser, Sample, SampleBlock, encode_binary
from lambdas.ingest import events as cloud_events

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
    assert isinstance(samples, list)
    assert [s.timestamp for s in samples] == [1386018900.0, 1386019200.0]  # naive ISO is UTC
    assert [s.values for s in samples] == [(1.0, 2.0), (3.0, 4.0)]


def test_stream_falls_back_to_topic_stream() -> None:
    samples = PARSER.parse(b'{"timestamp": 1, "values": {"temp": 1, "vib": 2}}', default_stream="from-topic")
    assert isinstance(samples, list)
    assert samples[0].stream == "from-topic"


def test_the_stream_limits_are_the_clouds() -> None:
    from greengrass_components.anomaly_detector.messages import CONTROL_CHARS, MAX_STREAM_CHARS

    # An event of a stream the cloud refuses is never stored, so never acked (docs/contracts.md §6c).
    assert MAX_STREAM_CHARS == cloud_events.MAX_TEXT_LENGTH
    assert CONTROL_CHARS.pattern == cloud_events._CONTROL_CHARS.pattern


def _json(stream: str | None) -> bytes:
    body: dict[str, object] = {"timestamp": 1, "values": {"temp": 1, "vib": 2}}
    if stream is not None:
        body["stream"] = stream
    return json.dumps(body).encode()


def _binary(stream: str) -> bytes:
    return encode_binary(stream, [1.0], np.array([[1.0, 2.0]]), ["temp", "vib"])


# Each way a stream reaches the parser: in a JSON message, in a binary (EDG1) header, from the topic.
STREAM_CARRIERS = {
    "json": lambda stream: PARSER.parse(_json(stream)),
    "binary": lambda stream: PARSER.parse(_binary(stream)),
    "json_topic": lambda stream: PARSER.parse(_json(None), default_stream=stream),
    "binary_topic": lambda stream: PARSER.parse(_binary(""), default_stream=stream),
    "document_topic": lambda stream: PARSER.parse_document(json.loads(_json(None)), default_stream=stream),
}


@pytest.mark.parametrize("carrier", sorted(STREAM_CARRIERS))
@pytest.mark.parametrize(
    "stream",
    ["s" * (cloud_events.MAX_TEXT_LENGTH + 1), "pump\n1", "pump\x001", "pump\x7f", "\x1b[31mred"],
    ids=["too_long", "newline", "nul", "del", "escape"],
)
def test_a_stream_the_cloud_would_refuse_is_refused_here(carrier: str, stream: str) -> None:
    assert cloud_events._CONTROL_CHARS.search(stream) or len(stream) > cloud_events.MAX_TEXT_LENGTH
    with pytest.raises(MessageError, match="stream must be 1-128 characters of UTF-8") as info:
        STREAM_CARRIERS[carrier](stream)
    assert info.value.kind == "bad_stream"


@pytest.mark.parametrize("carrier", sorted(STREAM_CARRIERS))
def test_the_longest_stream_the_cloud_takes_is_taken(carrier: str) -> None:
    stream = "é" * cloud_events.MAX_TEXT_LENGTH  # characters, not bytes, as the cloud counts them
    parsed = STREAM_CARRIERS[carrier](stream)
    assert (parsed[0].stream if isinstance(parsed, list) else parsed.stream) == stream


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
        # Refused by orjson (strict RFC 8259 / 64-bit integers), re-read by the stdlib: kinds as before.
        (
            b'{"stream": "s", "timestamp": 1, "values": {"temp": 1' + b"0" * 400 + b', "vib": 2}}',
            "non_finite",
            "too large for a float",
        ),
        (b"[" * 100_000, "not_json", "nested too deeply"),
        (b'{"stream": "s", "samples": [3]}', "bad_shape", r"samples\[0\] must be an object"),
    ],
)
def test_malformed_messages_raise_typed_errors(payload: bytes, kind: str, message: str) -> None:
    with pytest.raises(MessageError, match=message) as info:
        PARSER.parse(payload)
    assert info.value.kind == kind


def test_columnar_batch_parses_into_one_block() -> None:
    parser = MessageParser(["a", "b"])
    block = parser.parse(b'{"stream":"s","timestamps":[1,2,3],"values":{"a":[1,2,3],"b":[4.5,5,6]}}')
    assert isinstance(block, SampleBlock)
    assert block.stream == "s"
    assert block.timestamps.tolist() == [1.0, 2.0, 3.0]
    assert block.values.tolist() == [[1, 4.5], [2, 5], [3, 6]]


@pytest.mark.parametrize(
    ("payload", "kind", "message"),
    [
        (b'{"stream":"s","timestamps":[1,2],"values":{"a":[1]}}', "bad_shape", "must be a list of 2 numbers"),
        (b'{"stream":"s","timestamps":[1,2],"values":{"a":[1,true]}}', "bad_value", "numbers only"),
        (b'{"stream":"s","timestamps":[1,2],"values":{"a":[1,NaN]}}', "non_finite", "non-finite"),
        (b'{"stream":"s","timestamps":[1,2],"values":{"b":[1,2]}}', "missing_channel", "channel 'a'"),
        (b'{"stream":"s","timestamps":[1,"x"],"values":{"a":[1,2]}}', "bad_timestamp", "not ISO-8601"),
        (b'{"stream":"s","timestamp":1,"values":{"a":1e300}}', "non_finite", "not finite"),
    ],
)
def test_columnar_and_range_errors_have_stable_kinds(payload: bytes, kind: str, message: str) -> None:
    with pytest.raises(MessageError, match=message) as error:
        MessageParser(["a"]).parse(payload)
    assert error.value.kind == kind


def test_oversized_payload_is_refused_before_parsing() -> None:
    parser = MessageParser(["a"], max_message_bytes=100, max_samples=2)
    with pytest.raises(MessageError, match="payload has 101 bytes, the limit is 100") as big:
        parser.parse(b"x" * 101)
    assert big.value.kind == "oversized"
    with pytest.raises(MessageError, match="3 samples, the limit is 2") as many:
        parser.parse(b'{"stream":"s","timestamps":[1,2,3],"values":{"a":[1,2,3]}}')
    assert many.value.kind == "oversized"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"stream": "s", "timestamps": [1, 2], "values": {"value": [1, 1' + b"0" * 400 + b"]}}",
        b'{"stream": "s", "timestamps": [1, 1' + b"0" * 400 + b'], "values": {"value": [1, 2]}}',
        b'{"stream": "s", "timestamp": 1, "values": {"value": 1' + b"0" * 400 + b"}}",
    ],
    ids=["columnar-value", "columnar-timestamp", "single-value"],
)
def test_integer_too_large_for_a_float_is_a_reject_not_a_crash(payload: bytes) -> None:
    with pytest.raises(MessageError, match="a number is too large for a float") as refused:
        MessageParser(["value"]).parse(payload)
    assert refused.value.kind == "non_finite"
