"""The ``Source`` port (where sensor samples come from) and its adapters: file replay, MQTT, Greengrass IPC.

Sources are polled by the app loop with a timeout, so the loop can flush a micro-batch after its maximum
wait even when input is slow. Parsing happens at poll time with the parser the app passes in, so a model
hot-swap that changes channels takes effect on the next message. A malformed message becomes an
``Inbound`` carrying the error: the loop counts it and goes on.
"""

from __future__ import annotations

import csv
import json
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from .errors import MessageError, SourceError, TransportError
from .logs import get_logger
from .messages import (
    BAD_SHAPE,
    BAD_VALUE,
    NOT_UTF8,
    OVERSIZED,
    MessageParser,
    Sample,
    SampleBlock,
    parse_timestamp,
)
from .transport import MqttSettings, connect_in_background, new_paho_client

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = get_logger("sources")


@dataclass(frozen=True)
class Inbound:
    """One received message: its samples, or the reason it was rejected, and its size on the wire."""

    raw_bytes: int
    samples: tuple[Sample, ...] = ()
    error: MessageError | None = None
    blocks: tuple[SampleBlock, ...] = ()
    received_at: float | None = None  # monotonic time it came off the network (latency is measured from it)


class Source(Protocol):
    @property
    def finished(self) -> bool:
        """True once a finite source (file replay) has nothing more to give."""

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound | None:
        """The next message, or None if nothing arrived within ``timeout_s`` (or the source is finished)."""

    def close(self) -> None: ...


def _inbound(raw_bytes: int, parsed: list[Sample] | SampleBlock, received_at: float | None) -> Inbound:
    if isinstance(parsed, SampleBlock):
        return Inbound(raw_bytes, blocks=(parsed,), received_at=received_at)
    return Inbound(raw_bytes, tuple(parsed), received_at=received_at)


def _parse(
    parser: MessageParser, payload: bytes, default_stream: str | None, received_at: float | None = None
) -> Inbound:
    try:
        return _inbound(len(payload), parser.parse(payload, default_stream=default_stream), received_at)
    except MessageError as exc:
        return Inbound(len(payload), error=exc, received_at=received_at)


def stream_from_topic(topic: str) -> str | None:
    """``sensors/pump-1`` -> ``pump-1``: the fallback stream name when a message omits ``stream``."""
    last = topic.rsplit("/", 1)[-1]
    return last or None


def _csv_timestamp(cell: str) -> float | str:
    """CSV cells are text: a numeric cell is epoch seconds, anything else is tried as ISO-8601."""
    text = cell.strip()
    try:
        return float(text)
    except ValueError:
        return text


class FileReplaySource:
    """Replays a CSV (NAB ``timestamp,value`` or any CSV with a timestamp column and numeric columns).

    ``speed`` is relative to the file's timestamps: 1 = real time, 300 = 5-minute data at one row per
    second, 0 = as fast as possible. Each row counts its own bytes as the raw input size.
    """

    def __init__(
        self,
        path: Path,
        *,
        stream: str,
        speed: float = 0.0,
        timestamp_column: str = "timestamp",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed < 0:
            raise SourceError(f"speed must be >= 0, got {speed}")
        self._stream = stream
        self._speed = speed
        self._clock = clock
        self._sleep = sleep
        try:
            self._file: BinaryIO = path.open("rb")
        except OSError as exc:
            raise SourceError(f"cannot open replay file {path}: {exc.strerror or exc}") from exc
        header_line = self._file.readline()
        try:
            header_text = header_line.decode("utf-8-sig")
        except UnicodeDecodeError:
            self._file.close()
            raise SourceError(f"replay file {path} does not start with a UTF-8 CSV header") from None
        header = [h.strip() for h in next(csv.reader([header_text]), [])]
        if timestamp_column not in header:
            self._file.close()
            raise SourceError(f"replay file {path} has no {timestamp_column!r} column (header: {header})")
        self._header = header
        self._ts_index = header.index(timestamp_column)
        self._rows: Iterator[bytes] = iter(self._file)
        self._finished = False
        self._next: bytes | None = None
        self._first_ts: float | None = None
        self._start_wall = 0.0

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def dropped(self) -> int:
        """A file is read at the loop's pace: nothing is ever dropped."""
        return 0

    def _columns_for(self, channels: tuple[str, ...]) -> dict[str, int]:
        data_columns = [i for i in range(len(self._header)) if i != self._ts_index]
        if all(c in self._header for c in channels):
            return {c: self._header.index(c) for c in channels}
        # NAB files name their one column "value"; a one-channel model may call its channel anything.
        if len(channels) == 1 and len(data_columns) == 1:
            return {channels[0]: data_columns[0]}
        missing = [c for c in channels if c not in self._header]
        raise SourceError(f"replay file has no column for channels {missing} (header: {self._header})")

    def _peek_line(self) -> bytes | None:
        """The next non-blank row (kept until consumed, so pacing can say 'not yet')."""
        while self._next is None and not self._finished:
            line = next(self._rows, None)
            if line is None:
                self._finished = True
                self._file.close()
            elif line.strip():
                self._next = line
        return self._next

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound | None:
        line = self._peek_line()
        if line is None:
            return None
        columns = self._columns_for(parser.channels)
        try:
            row = self._split(line)
        except MessageError as exc:
            self._next = None
            return Inbound(len(line), error=exc)
        if self._speed > 0 and not self._wait_for_turn(row[self._ts_index], timeout_s):
            return None
        self._next = None
        try:
            values = {channel: float(row[index]) for channel, index in columns.items()}
        except ValueError:
            return Inbound(len(line), error=MessageError(BAD_VALUE, f"non-numeric value in row {row}"))
        try:
            sample = parser.sample_from_fields(self._stream, _csv_timestamp(row[self._ts_index]), values)
        except MessageError as exc:
            return Inbound(len(line), error=exc)
        return Inbound(len(line), (sample,))

    def _split(self, line: bytes) -> list[str]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError(NOT_UTF8, "row is not valid UTF-8") from None
        row = next(csv.reader([text]), [])
        if len(row) != len(self._header):
            raise MessageError(BAD_SHAPE, f"row has {len(row)} fields")
        return row

    def _wait_for_turn(self, raw_ts: str, timeout_s: float) -> bool:
        """Pace rows by their timestamps; False means 'not yet' (the caller polls again)."""
        try:
            ts = parse_timestamp(_csv_timestamp(raw_ts))
        except MessageError:
            return True  # a bad timestamp is reported by the normal path, without pacing
        if self._first_ts is None:
            self._first_ts, self._start_wall = ts, self._clock()
        due = self._start_wall + (ts - self._first_ts) / self._speed
        delay = due - self._clock()
        if delay <= 0:
            return True
        self._sleep(min(delay, timeout_s))
        return delay <= timeout_s

    def close(self) -> None:
        self._file.close()
        self._finished = True


@dataclass(frozen=True)
class _Received:
    topic: str | None
    payload: bytes | None = None
    document: Any = None
    received_at: float = 0.0


class _QueueSource:
    """Shared part of push-based sources: callbacks enqueue, ``poll`` dequeues and parses."""

    def __init__(self, max_queue: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: queue.Queue[_Received] = queue.Queue(maxsize=max_queue)
        self._clock = clock
        self.dropped = 0

    @property
    def finished(self) -> bool:
        return False

    def _offer(self, item: _Received) -> None:
        # Called on a network thread: never block it; a full queue means we are behind, so drop and count.
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def poll(self, timeout_s: float, parser: MessageParser) -> Inbound | None:
        try:
            item = self._queue.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None
        default_stream = stream_from_topic(item.topic) if item.topic else None
        if item.payload is not None:
            return _parse(parser, item.payload, default_stream, item.received_at)
        raw_bytes = len(json.dumps(item.document, separators=(",", ":")).encode("utf-8"))
        if raw_bytes > parser.max_message_bytes:
            error = MessageError(
                OVERSIZED, f"payload has {raw_bytes} bytes, the limit is {parser.max_message_bytes}"
            )
            return Inbound(raw_bytes, error=error, received_at=item.received_at)
        try:
            parsed = parser.parse_document(item.document, default_stream=default_stream)
        except MessageError as exc:
            return Inbound(raw_bytes, error=exc, received_at=item.received_at)
        return _inbound(raw_bytes, parsed, item.received_at)


class MqttSource(_QueueSource):
    """Subscribes (QoS 1) to sensor topics such as ``sensors/#`` on a local MQTT broker.

    A broker that is not up yet when the component starts is waited for in the background (it often
    starts after us at boot); the subscription is made on every (re)connect.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        topic: str,
        max_queue: int = 10_000,
        client: mqtt.Client | None = None,
    ) -> None:
        super().__init__(max_queue)
        try:
            self._client = client if client is not None else new_paho_client(settings)
        except TransportError as exc:
            raise SourceError(f"MQTT source cannot start: {exc}") from exc
        self._client.on_message = self._on_message

        def subscribe(c: mqtt.Client) -> None:
            c.subscribe(topic, qos=1)

        try:
            connect_in_background(self._client, settings, on_connected=subscribe)
        except (OSError, ValueError) as exc:  # e.g. an unreadable TLS file: the source cannot start
            raise SourceError(f"MQTT source cannot start: {exc}") from exc

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self._offer(_Received(message.topic, bytes(message.payload), received_at=self._clock()))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class IpcSubscriber(Protocol):
    def subscribe_to_topic(
        self,
        *,
        topic: str,
        on_stream_event: Callable[[Any], None],
        on_stream_error: Callable[[Exception], bool],
        on_stream_closed: Callable[[], None],
    ) -> Any: ...


class IpcSource(_QueueSource):
    """Subscribes to Greengrass local pub/sub (``SubscribeToTopic``) through the shared IPC client."""

    def __init__(self, ipc_client: IpcSubscriber, *, topic: str, max_queue: int = 10_000) -> None:
        super().__init__(max_queue)
        self.stream_errors = 0
        try:
            _response, self._operation = ipc_client.subscribe_to_topic(
                topic=topic,
                on_stream_event=self._on_event,
                on_stream_error=self._on_error,
                on_stream_closed=lambda: log.warning(
                    "IPC sensor subscription closed", extra={"topic": topic}
                ),
            )
        except Exception as exc:  # the IPC SDK raises several unrelated error types
            raise SourceError(f"SubscribeToTopic {topic!r} failed: {exc}") from exc

    def _on_event(self, event: Any) -> None:
        # An IPC callback that raises kills its stream, so nothing here may raise.
        if event.binary_message is not None:
            context = event.binary_message.context
            self._offer(
                _Received(
                    getattr(context, "topic", None), event.binary_message.message, received_at=self._clock()
                )
            )
        elif event.json_message is not None:
            context = event.json_message.context
            self._offer(
                _Received(
                    getattr(context, "topic", None),
                    document=event.json_message.message,
                    received_at=self._clock(),
                )
            )

    def _on_error(self, error: Exception) -> bool:
        self.stream_errors += 1
        log.error("IPC sensor stream error", extra={"error": str(error)})
        return False  # keep the subscription open

    def close(self) -> None:
        close = getattr(self._operation, "close", None)
        if close is not None:
            close()
