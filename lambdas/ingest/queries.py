"""Read side: a device's anomaly events in a time range, in time order (all streams or one stream)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.client import BaseClient

from lambdas.common.aws import ServiceAdapter, query_items
from lambdas.ingest.table import (
    PARTITION_KEY,
    SORT_KEY,
    STREAM_INDEX_NAME,
    STREAM_INDEX_PARTITION_KEY,
    STREAM_INDEX_SORT_KEY,
    device_pk,
    event_range,
    stream_pk,
)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    thing_name: str
    stream: str
    timestamp: str  # fixed-width UTC, e.g. 2013-12-11T06:00:00.000000Z
    score: float
    peak_score: float
    threshold: float
    model_version: str
    channels: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]
    suppressed: int
    received_at: float
    start: str | None = None
    end: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StoredEvent:
        def text(name: str) -> str:
            return str(item[name]["S"])

        def number(name: str) -> float:
            return float(item[name]["N"])

        return cls(
            event_id=text("event_id"),
            thing_name=text("thing_name"),
            stream=text("stream"),
            timestamp=text("timestamp"),
            score=number("score"),
            peak_score=number("peak_score"),
            threshold=number("threshold"),
            model_version=text("model_version"),
            channels=tuple(str(c["S"]) for c in item["channels"]["L"]),
            values=tuple(tuple(float(v) for v in row) for row in json.loads(text("values_json"))),
            suppressed=int(item["suppressed"]["N"]),
            received_at=number("received_at"),
            start=text("start") if "start" in item else None,
            end=text("end") if "end" in item else None,
        )


class EventQueries(ServiceAdapter):
    service_name = "dynamodb"

    def __init__(self, table_name: str, client: BaseClient | None = None) -> None:
        super().__init__(client)
        self._table_name = table_name

    def events_for_device(self, thing: str, start: datetime, end: datetime) -> list[StoredEvent]:
        """Events of ``thing`` whose timestamp lies in ``[start, end]`` (aware datetimes), oldest first."""
        low, high = _range(start, end)
        return list(
            self._query(
                KeyConditionExpression="#pk = :pk AND #sk BETWEEN :low AND :high",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#sk": SORT_KEY},
                ExpressionAttributeValues={
                    ":pk": {"S": device_pk(thing)},
                    ":low": {"S": low},
                    ":high": {"S": high},
                },
            )
        )

    def events_for_stream(self, thing: str, stream: str, start: datetime, end: datetime) -> list[StoredEvent]:
        """As ``events_for_device``, restricted to one stream (through the stream index)."""
        low, high = _range(start, end)
        return list(
            self._query(
                IndexName=STREAM_INDEX_NAME,
                KeyConditionExpression="#pk = :pk AND #sk BETWEEN :low AND :high",
                ExpressionAttributeNames={"#pk": STREAM_INDEX_PARTITION_KEY, "#sk": STREAM_INDEX_SORT_KEY},
                ExpressionAttributeValues={
                    ":pk": {"S": stream_pk(thing, stream)},
                    ":low": {"S": low},
                    ":high": {"S": high},
                },
            )
        )

    def _query(self, **kwargs: Any) -> Iterator[StoredEvent]:
        items = query_items(self.client, TableName=self._table_name, ScanIndexForward=True, **kwargs)
        return (StoredEvent.from_item(item) for item in items)


def _range(start: datetime, end: datetime) -> tuple[str, str]:
    # A naive datetime would be read as the machine's local time: refuse it rather than guess.
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    return event_range(start, end)
