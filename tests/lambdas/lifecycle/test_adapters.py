"""The heartbeat reader against DynamoDB's paging: a page ends at 1 MB whatever ``Limit`` says.

The client is a real boto3 client with botocore's Stubber, so each request is checked against the service
model and the pages are the ones DynamoDB would send (moto never cuts a page at 1 MB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.lifecycle.adapters import EventsTableHeartbeats
from lambdas.lifecycle.health import HeartbeatSample

TABLE = "edgeml-dev-events"
THING = "gw-1"
PROJECTION = "#ts, #model, #counters"


def heartbeat_item(timestamp: str, windows: int, anomalies: int) -> dict[str, Any]:
    """A heartbeat item as the projection returns it (``lambdas.ingest.adapters.put_heartbeat``)."""
    return {
        "timestamp": {"S": timestamp},
        "model_version": {"S": "v1"},
        "counters": {
            "M": {"windows_scored": {"N": str(windows)}, "anomalous_windows": {"N": str(anomalies)}}
        },
    }


def expected_query(limit: int, start: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "TableName": TABLE,
        "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :hb)",
        "ProjectionExpression": PROJECTION,
        "ExpressionAttributeNames": {
            "#pk": "pk",
            "#sk": "sk",
            "#ts": "timestamp",
            "#model": "model_version",
            "#counters": "counters",
        },
        "ExpressionAttributeValues": {":pk": {"S": f"DEVICE#{THING}"}, ":hb": {"S": "HB#"}},
        "ScanIndexForward": False,
        "Limit": limit,
    }
    if start is not None:
        params["ExclusiveStartKey"] = start
    return params


@pytest.fixture
def dynamodb() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_recent_follows_last_evaluated_key_up_to_its_limit(dynamodb: tuple[Any, Stubber]) -> None:
    client, stubber = dynamodb
    last_key = {"pk": {"S": f"DEVICE#{THING}"}, "sk": {"S": "HB#2026-01-01T00:03:00Z"}}
    # Newest first: the first page stops at 1 MB after two items; the second holds the oldest (baseline).
    stubber.add_response(
        "query",
        {
            "Items": [
                heartbeat_item("2026-01-01T00:05:00Z", 10, 3),
                heartbeat_item("2026-01-01T00:04:00Z", 10, 2),
            ],
            "LastEvaluatedKey": last_key,
        },
        expected_query(limit=3),
    )
    stubber.add_response(
        "query",
        {"Items": [heartbeat_item("2026-01-01T00:03:00Z", 10, 0)]},
        # The second page asks only for what is still missing.
        expected_query(limit=1, start=last_key),
    )

    samples = EventsTableHeartbeats(TABLE, client, limit=3).recent(THING)

    assert samples == [
        HeartbeatSample("2026-01-01T00:03:00Z", "v1", windows_scored=10.0, anomalous_windows=0.0),
        HeartbeatSample("2026-01-01T00:04:00Z", "v1", windows_scored=10.0, anomalous_windows=2.0),
        HeartbeatSample("2026-01-01T00:05:00Z", "v1", windows_scored=10.0, anomalous_windows=3.0),
    ]


def test_recent_stops_at_its_limit_even_when_more_pages_remain(dynamodb: tuple[Any, Stubber]) -> None:
    client, stubber = dynamodb
    stubber.add_response(
        "query",
        {
            "Items": [
                heartbeat_item("2026-01-01T00:05:00Z", 10, 1),
                heartbeat_item("2026-01-01T00:04:00Z", 10, 1),
            ],
            "LastEvaluatedKey": {"pk": {"S": f"DEVICE#{THING}"}, "sk": {"S": "HB#2026-01-01T00:04:00Z"}},
        },
        expected_query(limit=2),
    )
    samples = EventsTableHeartbeats(TABLE, client, limit=2).recent(THING)
    assert [s.timestamp for s in samples] == ["2026-01-01T00:04:00Z", "2026-01-01T00:05:00Z"]


def test_recent_asks_only_for_what_a_sample_needs(dynamodb: tuple[Any, Stubber]) -> None:
    """The Stubber matches the request exactly: a projection of timestamp, model and counters, so the
    stored raw heartbeat (``body``), rejects and drift maps stay behind; the default limit is 200."""
    client, stubber = dynamodb
    stubber.add_response("query", {"Items": []}, expected_query(limit=200))
    assert EventsTableHeartbeats(TABLE, client).recent(THING) == []
