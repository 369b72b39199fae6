"""The events table's layout: key schema, index, TTL attribute and key builders.

One table holds three kinds of item under a device's partition, plus one marker item per event:

| item | pk | sk |
|---|---|---|
| anomaly event | ``DEVICE#<thing>`` | ``TS#<timestamp>#<event_id>`` |
| heartbeat | ``DEVICE#<thing>`` | ``HB#<timestamp>`` |
| alert rate-limit counter | ``DEVICE#<thing>`` | ``ALERTS`` |
| idempotency marker | ``EVENT#<event_id>`` | ``EVENT`` |

Event items also carry ``stream_pk = STREAM#<thing>#<stream>`` and ``stream_sk`` (= ``sk``) for the
per-stream index. ``EVENTS_TABLE_SCHEMA`` is what the CDK table must match; tests and the local stand-in
create the table from ``create_table_kwargs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PARTITION_KEY = "pk"
SORT_KEY = "sk"
STREAM_INDEX_NAME = "by-stream"
STREAM_INDEX_PARTITION_KEY = "stream_pk"
STREAM_INDEX_SORT_KEY = "stream_sk"
TTL_ATTRIBUTE = "expires_at"

EVENT_SK_PREFIX = "TS#"
HEARTBEAT_SK_PREFIX = "HB#"
ALERT_COUNTER_SK = "ALERTS"
MARKER_SK = "EVENT"


@dataclass(frozen=True)
class TableSchema:
    """Attribute names of the events table (all keys are strings; billing is on demand)."""

    partition_key: str
    sort_key: str
    stream_index_name: str
    stream_index_partition_key: str
    stream_index_sort_key: str
    ttl_attribute: str

    def create_table_kwargs(self, table_name: str) -> dict[str, Any]:
        """Arguments for boto3 ``dynamodb.create_table`` (moto tests, local stand-in)."""
        return {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": "S"}
                for name in (
                    self.partition_key,
                    self.sort_key,
                    self.stream_index_partition_key,
                    self.stream_index_sort_key,
                )
            ],
            "KeySchema": [
                {"AttributeName": self.partition_key, "KeyType": "HASH"},
                {"AttributeName": self.sort_key, "KeyType": "RANGE"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": self.stream_index_name,
                    "KeySchema": [
                        {"AttributeName": self.stream_index_partition_key, "KeyType": "HASH"},
                        {"AttributeName": self.stream_index_sort_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        }


EVENTS_TABLE_SCHEMA = TableSchema(
    partition_key=PARTITION_KEY,
    sort_key=SORT_KEY,
    stream_index_name=STREAM_INDEX_NAME,
    stream_index_partition_key=STREAM_INDEX_PARTITION_KEY,
    stream_index_sort_key=STREAM_INDEX_SORT_KEY,
    ttl_attribute=TTL_ATTRIBUTE,
)


def timestamp_key(moment: datetime) -> str:
    """Fixed-width UTC text (microseconds always present) so that string order is time order.

    ``06:00:00Z`` would sort after ``06:00:00.5Z`` ('Z' > '.'), hence no optional fraction.
    """
    # isoformat pads the year to four digits, which strftime("%Y") does not do on every platform.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def device_pk(thing_name: str) -> str:
    return f"DEVICE#{thing_name}"


def event_sk(moment: datetime, event_id: str) -> str:
    return f"{EVENT_SK_PREFIX}{timestamp_key(moment)}#{event_id}"


def event_range(start: datetime, end: datetime) -> tuple[str, str]:
    """Inclusive sort-key bounds covering every event whose timestamp lies in ``[start, end]``.

    Event ids are ``[A-Za-z0-9_-]``, all below '~', so ``#~`` closes the range after the last id.
    """
    return f"{EVENT_SK_PREFIX}{timestamp_key(start)}#", f"{EVENT_SK_PREFIX}{timestamp_key(end)}#~"


def stream_pk(thing_name: str, stream: str) -> str:
    # Thing names cannot contain '#', so the first '#' after the prefix always ends the thing name.
    return f"STREAM#{thing_name}#{stream}"


def heartbeat_sk(moment: datetime) -> str:
    return f"{HEARTBEAT_SK_PREFIX}{timestamp_key(moment)}"


def marker_pk(event_id: str) -> str:
    return f"EVENT#{event_id}"
