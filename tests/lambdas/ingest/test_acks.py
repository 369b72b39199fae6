"""Delivery acks (contracts §4): the pure message builder, publishing with a fake, and the iot-data adapter.

The adapter runs against moto's IoT data plane, which keeps every published (topic, payload); botocore's
Stubber checks the exact request (QoS 1) and answers with the errors IoT returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from lambdas.ingest.acks import (
    ACK_SCHEMA,
    MAX_ACK_IDS,
    AckMessage,
    AckReport,
    ack_messages,
    acknowledge,
    publish_acks,
)
from lambdas.ingest.adapters import (
    ACK_PUBLISH_FAILURES_METRIC,
    EmfAckMetrics,
    IotDataAckPublisher,
)
from lambdas.ingest.errors import AckPublishError
from tests.lambdas.ingest.helpers import REGION

# moto serves the data plane on the service's default host (not on the account-specific one it names).
MOTO_DATA_ENDPOINT = f"https://data-ats.iot.{REGION}.amazonaws.com"
NAMESPACE = "EdgeML/test"


@dataclass(frozen=True)
class Stored:
    thing_name: str
    event_id: str


def _ids(n: int, prefix: str = "evt") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(n)]


class FakePublisher:
    """Records what it publishes; fails every message for the things in ``failing``."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.published: list[AckMessage] = []

    def publish(self, message: AckMessage) -> None:
        if message.thing_name in self.failing:
            raise AckPublishError(f"ack to {message.topic} not published: ThrottlingException: slow down")
        self.published.append(message)


# --- the pure part -----------------------------------------------------------------------------------


def test_one_message_per_thing_on_its_acks_topic_in_arrival_order() -> None:
    stored = [Stored("gw-1", "aaaaaaaa1"), Stored("gw-2", "bbbbbbbb1"), Stored("gw-1", "aaaaaaaa2")]

    messages = ack_messages(stored)

    assert [(m.topic, m.event_ids) for m in messages] == [
        ("edge/gw-1/acks", ("aaaaaaaa1", "aaaaaaaa2")),
        ("edge/gw-2/acks", ("bbbbbbbb1",)),
    ]
    assert json.loads(messages[0].payload) == {"schema": ACK_SCHEMA, "event_ids": ["aaaaaaaa1", "aaaaaaaa2"]}
    assert ACK_SCHEMA == "edgeml.ack/1"


def test_at_most_100_ids_per_message_and_none_lost() -> None:
    ids = _ids(2 * MAX_ACK_IDS + 1)

    messages = ack_messages(Stored("gw-1", i) for i in ids)

    assert MAX_ACK_IDS == 100
    assert [len(m.event_ids) for m in messages] == [100, 100, 1]
    assert [i for m in messages for i in json.loads(m.payload)["event_ids"]] == ids


def test_an_id_delivered_twice_in_a_batch_is_acked_once() -> None:
    messages = ack_messages([Stored("gw-1", "aaaaaaaa1"), Stored("gw-1", "aaaaaaaa1")])
    assert [m.event_ids for m in messages] == [("aaaaaaaa1",)]


def test_nothing_stored_nothing_published() -> None:
    publisher = FakePublisher()
    report = acknowledge([], publisher)
    assert ack_messages([]) == []
    assert publisher.published == []
    assert report == AckReport(published=(), failed=())


def test_a_failed_ack_is_reported_and_does_not_hold_back_the_others() -> None:
    publisher = FakePublisher(failing=frozenset({"gw-2"}))
    stored = [Stored("gw-1", "aaaaaaaa1"), Stored("gw-2", "bbbbbbbb1"), Stored("gw-3", "cccccccc1")]

    report = publish_acks(ack_messages(stored), publisher)

    assert [m.thing_name for m in publisher.published] == ["gw-1", "gw-3"]
    assert report.acked_event_ids == ("aaaaaaaa1", "cccccccc1")
    assert report.unacked_event_ids == ("bbbbbbbb1",)
    [failed] = report.failed
    assert failed.error == "ack to edge/gw-2/acks not published: ThrottlingException: slow down"


def test_failed_acks_are_counted_as_a_metric() -> None:
    lines: list[str] = []
    publisher = FakePublisher(failing=frozenset({"gw-2"}))

    acknowledge(
        [Stored("gw-2", i) for i in _ids(MAX_ACK_IDS + 1)] + [Stored("gw-1", "aaaaaaaa1")],
        publisher,
        EmfAckMetrics(NAMESPACE, write=lines.append),
    )

    [line] = lines
    document = json.loads(line)
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Metrics"] == [{"Name": ACK_PUBLISH_FAILURES_METRIC, "Unit": "Count"}]
    assert document[ACK_PUBLISH_FAILURES_METRIC] == [2.0]  # two messages for gw-2's 101 events
    assert document["unacked_events"] == MAX_ACK_IDS + 1


def test_no_metric_line_when_every_ack_went_out() -> None:
    lines: list[str] = []
    acknowledge([Stored("gw-1", "aaaaaaaa1")], FakePublisher(), EmfAckMetrics(NAMESPACE, write=lines.append))
    assert lines == []


# --- the iot-data adapter ----------------------------------------------------------------------------


@pytest.fixture
def moto_aws() -> Iterator[None]:
    with mock_aws():
        yield


def _published() -> list[tuple[str, bytes]]:
    return list(iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads)


def _message(thing: str = "gw-1", ids: tuple[str, ...] = ("aaaaaaaa1",)) -> AckMessage:
    [message] = ack_messages(Stored(thing, i) for i in ids)
    return message


def test_adapter_publishes_the_payload_to_the_things_acks_topic(moto_aws: None) -> None:
    publisher = IotDataAckPublisher(endpoint_url=MOTO_DATA_ENDPOINT)

    publisher.publish(_message("gw-1", ("aaaaaaaa1", "aaaaaaaa2")))

    [(topic, payload)] = _published()
    assert topic == "edge/gw-1/acks"
    assert json.loads(payload) == {"schema": "edgeml.ack/1", "event_ids": ["aaaaaaaa1", "aaaaaaaa2"]}


def test_adapter_publishes_at_qos_1() -> None:
    client = boto3.client("iot-data", region_name=REGION, endpoint_url=MOTO_DATA_ENDPOINT)
    message = _message()
    with Stubber(client) as stubber:
        stubber.add_response("publish", {}, {"topic": "edge/gw-1/acks", "qos": 1, "payload": message.payload})
        IotDataAckPublisher(client).publish(message)
        stubber.assert_no_pending_responses()


def test_data_endpoint_is_looked_up_once_on_first_publish_not_before(moto_aws: None) -> None:
    iot = boto3.client("iot", region_name=REGION)
    with Stubber(iot) as stubber:
        publisher = IotDataAckPublisher(iot_client=iot)  # a lookup here would hit the empty stub and fail
        stubber.add_response(
            "describe_endpoint",
            # The address moto's data plane answers on; AWS returns <prefix>-ats.iot.<region>.amazonaws.com.
            {"endpointAddress": f"data-ats.iot.{REGION}.amazonaws.com"},
            {"endpointType": "iot:Data-ATS"},
        )
        publisher.publish(_message("gw-1"))
        publisher.publish(_message("gw-2"))  # no second lookup: the stub holds only one answer
        stubber.assert_no_pending_responses()

    assert [topic for topic, _ in _published()] == ["edge/gw-1/acks", "edge/gw-2/acks"]


def test_failed_endpoint_lookup_is_an_ack_failure_and_is_retried(moto_aws: None) -> None:
    iot = boto3.client("iot", region_name=REGION)
    publisher = IotDataAckPublisher(iot_client=iot)
    with Stubber(iot) as stubber:
        stubber.add_client_error(
            "describe_endpoint", service_error_code="ThrottlingException", http_status_code=429
        )
        stubber.add_response("describe_endpoint", {"endpointAddress": f"data-ats.iot.{REGION}.amazonaws.com"})
        with pytest.raises(
            AckPublishError, match=r"ack to edge/gw-1/acks not published: ThrottlingException"
        ):
            publisher.publish(_message("gw-1"))
        publisher.publish(_message("gw-1"))
        stubber.assert_no_pending_responses()

    assert [topic for topic, _ in _published()] == ["edge/gw-1/acks"]


@pytest.mark.parametrize(
    ("code", "status"),
    [("ThrottlingException", 429), ("UnauthorizedException", 401), ("InternalFailureException", 500)],
)
def test_iot_errors_become_ack_publish_errors(code: str, status: int) -> None:
    client = boto3.client("iot-data", region_name=REGION, endpoint_url=MOTO_DATA_ENDPOINT)
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "publish", service_error_code=code, service_message="no", http_status_code=status
        )
        with pytest.raises(AckPublishError, match=rf"^ack to edge/gw-1/acks not published: {code}: no$"):
            IotDataAckPublisher(client).publish(_message())


def test_unreachable_endpoint_becomes_an_ack_publish_error() -> None:
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    publisher = IotDataAckPublisher(endpoint_url="http://127.0.0.1:9")
    with pytest.raises(AckPublishError, match=r"^ack to edge/gw-1/acks not published: Could not connect"):
        publisher.publish(_message())


def test_no_client_is_made_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    monkeypatch.setattr(boto3, "client", lambda *a, **k: made.append((a, k)))
    IotDataAckPublisher()
    IotDataAckPublisher(endpoint_url=MOTO_DATA_ENDPOINT)
    assert made == []
