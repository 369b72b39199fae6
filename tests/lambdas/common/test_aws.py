"""lambdas.common.aws: the shared client holder, error fields, throttling classification and query pages."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from lambdas.common.aws import (
    THROTTLING_CODES,
    ServiceAdapter,
    error_code,
    error_message,
    is_throttling,
    query_items,
)


def _client_error(code: str, message: str = "Rate exceeded") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Query")


class _Dynamo(ServiceAdapter):
    service_name = "dynamodb"


class _Pages:
    """A client whose ``query`` returns canned pages and records what it was asked."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(dict(kwargs))
        return self.pages[len(self.calls) - 1]


def test_error_fields_and_throttling() -> None:
    exc = _client_error("ThrottlingException")
    assert (error_code(exc), error_message(exc)) == ("ThrottlingException", "Rate exceeded")
    assert is_throttling(exc)
    assert not is_throttling(_client_error("AccessDeniedException"))
    assert error_code(ClientError({}, "Query")) == ""
    assert {"SlowDown", "ProvisionedThroughputExceededException"} <= THROTTLING_CODES


def test_adapter_uses_the_client_it_is_given() -> None:
    given = object()
    assert _Dynamo(given).client is given


def test_adapter_creates_its_client_on_first_use_only() -> None:
    adapter = _Dynamo()
    assert adapter._client is None
    with mock_aws():
        client = adapter.client
        assert client.meta.service_model.service_name == "dynamodb"
        assert adapter.client is client


def test_query_items_follows_every_page() -> None:
    client = _Pages(
        [
            {"Items": [{"n": 1}], "LastEvaluatedKey": {"k": 1}},
            {"Items": [{"n": 2}], "LastEvaluatedKey": {"k": 2}},
            {"Items": [{"n": 3}]},
        ]
    )
    assert query_items(client, TableName="t") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert client.calls == [
        {"TableName": "t"},
        {"TableName": "t", "ExclusiveStartKey": {"k": 1}},
        {"TableName": "t", "ExclusiveStartKey": {"k": 2}},
    ]


def test_query_items_asks_only_for_what_is_missing_and_stops_at_the_limit() -> None:
    client = _Pages(
        [
            {"Items": [{"n": 1}, {"n": 2}], "LastEvaluatedKey": {"k": 2}},
            {"Items": [{"n": 3}], "LastEvaluatedKey": {"k": 3}},
        ]
    )
    assert query_items(client, limit=3, TableName="t") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [call["Limit"] for call in client.calls] == [3, 1]
    assert client.calls[1]["ExclusiveStartKey"] == {"k": 2}


def test_query_items_against_a_table() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for i in range(5):
            client.put_item(TableName="t", Item={"pk": {"S": "a"}, "sk": {"S": f"{i}"}})
        arguments: dict[str, Any] = {
            "TableName": "t",
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "a"}},
        }
        assert [item["sk"]["S"] for item in query_items(client, limit=2, **arguments)] == ["0", "1"]
        assert len(query_items(client, **arguments)) == 5


def test_query_errors_reach_the_caller() -> None:
    class Failing:
        def query(self, **_: Any) -> dict[str, Any]:
            raise _client_error("ProvisionedThroughputExceededException")

    with pytest.raises(ClientError, match="ProvisionedThroughputExceededException"):
        query_items(Failing(), TableName="t")
