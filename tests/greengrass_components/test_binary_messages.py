"""The binary columnar (``EDG1``) sensor message: round trip, dispatch on the magic, every reject kind."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from greengrass_components.anomaly_detector.errors import MessageError
from greengrass_components.anomaly_detector.messages import MessageParser, SampleBlock, encode_binary
from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.scoring import ScoringEngine
from greengrass_components.anomaly_detector.sources import _parse

PARSER = MessageParser(["temp", "vib"])
STAMPS = np.array([1700000000.0, 1700000001.0, 1700000002.5])
VALUES = np.array([[71.3, 2.0], [71.4, 2.5], [71.2, 3.0]], dtype=np.float32)


def block(payload: bytes, parser: MessageParser = PARSER, default_stream: str | None = None) -> SampleBlock:
    parsed = parser.parse(payload, default_stream=default_stream)
    assert isinstance(parsed, SampleBlock)
    return parsed


def test_binary_round_trip_gives_the_same_block_as_json_columnar() -> None:
    binary = block(encode_binary("pump-1", STAMPS, VALUES, ["temp", "vib"]))
    json_payload = (
        '{"stream": "pump-1", "timestamps": [1700000000.0, 1700000001.0, 1700000002.5],'
        ' "values": {"temp": [71.3, 71.4, 71.2], "vib": [2.0, 2.5, 3.0]}}'
    )
    columnar = block(json_payload.encode())
    assert binary.stream == columnar.stream == "pump-1"
    np.testing.assert_array_equal(binary.timestamps, columnar.timestamps)
    np.testing.assert_array_equal(binary.values, columnar.values)
    assert binary.values.dtype == np.float32
    assert binary.values.flags.c_contiguous
    assert binary.values.flags.writeable  # a copy, not a read-only view of the payload


def test_channels_are_reordered_to_the_model_and_extra_channels_ignored() -> None:
    table = np.column_stack([VALUES[:, 1], np.zeros(3), VALUES[:, 0]])
    parsed = block(encode_binary("p", STAMPS, table, ["vib", "extra", "temp"]))
    np.testing.assert_array_equal(parsed.values, VALUES)


def test_empty_stream_name_falls_back_to_the_topic_stream() -> None:
    assert block(encode_binary("", STAMPS, VALUES, ["temp", "vib"]), default_stream="from-topic").stream == (
        "from-topic"
    )


def good() -> bytes:
    return encode_binary("pump-1", STAMPS, VALUES, ["temp", "vib"])


def header(*, version: int = 1, channels: int = 2, name_len: int = 6, n: int = 3) -> bytes:
    return struct.pack("<4sBBHI", b"EDG1", version, channels, name_len, n)


def nan_at(position: int, *, in_values: bool) -> bytes:
    payload = bytearray(good())
    offset = len(payload) - VALUES.size * 4 - (0 if in_values else STAMPS.size * 8)
    if in_values:
        payload[offset + 4 * position : offset + 4 * position + 4] = struct.pack("<f", float("nan"))
    else:
        payload[offset + 8 * position : offset + 8 * position + 8] = struct.pack("<d", float("inf"))
    return bytes(payload)


@pytest.mark.parametrize(
    ("payload", "kind", "message"),
    [
        (good()[:10], "bad_binary", "no full header"),
        (good()[:-1], "bad_binary", "needs 75 bytes, got 74"),
        (good() + b"\0", "bad_binary", "needs 75 bytes, got 76"),
        (header(version=2) + good()[12:], "bad_binary", "version 2 is not supported"),
        (header(n=4) + good()[12:], "bad_binary", "4 samples x 2 channels needs"),
        (header(channels=3) + good()[12:], "bad_binary", "3 samples x 3 channels needs"),
        (header(name_len=60000) + good()[12:], "bad_binary", "truncated in the stream name"),
        (header(n=0) + good()[12:], "bad_shape", "no samples"),
        (header(channels=0) + good()[12:], "bad_binary", "no channels"),
        (header(n=200_000) + good()[12:], "oversized", "200000 samples, the limit is 100000"),
        (good()[:12] + b"\xff\xfe" + good()[14:], "bad_binary", "stream name is not UTF-8"),
        (good()[:18], "bad_binary", "truncated in the channel names"),
        (good()[:20], "bad_binary", "truncated in the channel name$"),
        (encode_binary("p", STAMPS, VALUES, ["temp", "temp"]), "bad_binary", "names a channel twice"),
        (encode_binary("p", STAMPS, VALUES, ["temp", "other"]), "missing_channel", "channel 'vib'"),
        (encode_binary("", STAMPS, VALUES, ["temp", "vib"]), "bad_stream", "non-empty string 'stream'"),
        (nan_at(3, in_values=True), "non_finite", "values must be finite"),
        (nan_at(1, in_values=False), "bad_timestamp", "timestamps must be finite"),
        (b"EDG2" + good()[4:], "not_utf8", "not valid UTF-8"),  # wrong magic: it is read as JSON
    ],
)
def test_malformed_binary_messages_are_rejected_by_kind(payload: bytes, kind: str, message: str) -> None:
    with pytest.raises(MessageError, match=message) as info:
        PARSER.parse(payload)
    assert info.value.kind == kind


def test_oversized_binary_payload_is_refused_before_parsing() -> None:
    parser = MessageParser(["temp", "vib"], max_message_bytes=74)
    with pytest.raises(MessageError, match="75 bytes, the limit is 74") as info:
        parser.parse(good())
    assert info.value.kind == "oversized"


def test_parse_binary_checks_the_magic_itself() -> None:
    with pytest.raises(MessageError, match="must start with b'EDG1', got b'EDG2'") as info:
        PARSER.parse_binary(b"EDG2" + good()[4:])
    assert info.value.kind == "bad_binary"


def test_non_increasing_timestamps_are_rejected_by_the_engine_like_json(model_path: Path) -> None:
    model = load_model(model_path)
    channels = model.metadata.channels
    engine = ScoringEngine(model, batch_size=64)
    values = np.ones((3, len(channels)), dtype=np.float32)
    for stamps, kind in (([1.0, 2.0, 2.0], "duplicate_timestamp"), ([1.0, 3.0, 2.0], "out_of_order")):
        parsed = MessageParser(channels).parse(encode_binary("s", stamps, values, channels))
        assert isinstance(parsed, SampleBlock)
        with pytest.raises(MessageError) as info:
            engine.add_block(parsed, 0.0)
        assert info.value.kind == kind


def test_sources_hand_binary_payloads_to_the_parser() -> None:
    inbound = _parse(PARSER, good(), None, 5.0)
    assert inbound.error is None
    assert inbound.raw_bytes == 75
    assert len(inbound.blocks) == 1
    assert len(inbound.blocks[0]) == 3
    rejected = _parse(PARSER, good()[:-1], None)
    assert rejected.error is not None
    assert rejected.error.kind == "bad_binary"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("s", STAMPS, VALUES[:2], ["temp", "vib"]), r"values must be \[3, 2\], got \[2, 2\]"),
        (("s", STAMPS, np.zeros((3, 0)), []), "1 to 255 channels, got 0"),
        (("s", STAMPS, VALUES, ["t" * 256, "vib"]), "channel name longer than 255 bytes"),
    ],
)
def test_encode_binary_refuses_what_it_cannot_encode(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_binary(*args)  # type: ignore[arg-type]
