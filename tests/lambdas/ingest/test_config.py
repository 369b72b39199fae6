from __future__ import annotations

import pytest

from lambdas.ingest.config import IngestConfig, load_config
from lambdas.ingest.core import AlertPolicy
from lambdas.ingest.errors import ConfigError

REQUIRED = {
    "EVENTS_TABLE": "events",
    "ARCHIVE_BUCKET": "archive",
    "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
}


def test_defaults_apply_when_optional_settings_are_unset() -> None:
    config = load_config(REQUIRED)
    assert config == IngestConfig(
        events_table="events",
        archive_bucket="archive",
        alert_topic_arn="arn:aws:sns:us-east-1:123456789012:alerts",
        alerts_per_window=5,
        alert_window_s=3600,
        heartbeat_ttl_days=30,
    )
    assert config.alert_policy == AlertPolicy(limit=5, window_s=3600)


def test_settings_are_read() -> None:
    config = load_config(
        REQUIRED | {"ALERTS_PER_WINDOW": "2", "ALERT_WINDOW_S": "60", "HEARTBEAT_TTL_DAYS": "3"}
    )
    assert (config.alerts_per_window, config.alert_window_s, config.heartbeat_ttl_days) == (2, 60, 3)


@pytest.mark.parametrize(
    ("value", "expected"), [("http://127.0.0.1:5000", "http://127.0.0.1:5000"), (" ", None)]
)
def test_iot_data_endpoint_override_is_read(value: str, expected: str | None) -> None:
    # Unset or blank: the function looks up the account's iot:Data-ATS endpoint itself.
    assert load_config(REQUIRED).iot_data_endpoint is None
    assert load_config(REQUIRED | {"IOT_DATA_ENDPOINT": value}).iot_data_endpoint == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {k: v for k, v in REQUIRED.items() if k != "EVENTS_TABLE"},
            "environment variable EVENTS_TABLE is required",
        ),
        (REQUIRED | {"ARCHIVE_BUCKET": "  "}, "environment variable ARCHIVE_BUCKET is required"),
        (REQUIRED | {"ALERTS_PER_WINDOW": "five"}, "ALERTS_PER_WINDOW='five' is not an integer"),
        (REQUIRED | {"ALERT_WINDOW_S": "0"}, "ALERT_WINDOW_S=0 must be positive"),
    ],
)
def test_bad_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ)
    assert message in str(raised.value)
