"""What the functions' AWS adapters share: the lazily created client, error fields, throttling, queries.

Pure of any one function's errors: callers turn a classification into their own exception types.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import boto3
from botocore.client import BaseClient
from botocore.exceptions import ClientError

# Error codes AWS uses for "slow down": botocore has already retried these with backoff by the time they
# reach us, so callers surface them as their retryable error and the Lambda's own retries take over.
THROTTLING_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "RequestThrottled",
        "RequestThrottledException",
        "InternalServerException",
        "ServiceUnavailable",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))


def is_throttling(exc: ClientError) -> bool:
    return error_code(exc) in THROTTLING_CODES


class ServiceAdapter:
    """Holds one boto3 client: the one handed in (tests: moto, the Greengrass fake) or one made on first use.

    Nothing talks to AWS, or reads its configuration, at import or construction time.
    """

    service_name: ClassVar[str]

    def __init__(self, client: BaseClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(self.service_name)
        return self._client


def query_items(client: Any, *, limit: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item a DynamoDB ``Query`` returns across its pages, or the first ``limit`` of them.

    With a limit, each page asks only for what is still missing, so no more items are read than returned.
    """
    items: list[dict[str, Any]] = []
    while True:
        if limit is not None:
            kwargs["Limit"] = limit - len(items)
        page = client.query(**kwargs)
        items.extend(page.get("Items", []))
        last = page.get("LastEvaluatedKey")
        if not last or (limit is not None and len(items) >= limit):
            return items
        kwargs["ExclusiveStartKey"] = last
