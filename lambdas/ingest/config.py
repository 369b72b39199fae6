"""The ingest function's settings: environment variable names in one place, read once into a frozen object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lambdas.ingest.core import AlertPolicy
from lambdas.ingest.errors import ConfigError

ENV_EVENTS_TABLE = "EVENTS_TABLE"
ENV_ARCHIVE_BUCKET = "ARCHIVE_BUCKET"
ENV_ALERT_TOPIC_ARN = "ALERT_TOPIC_ARN"
ENV_ALERTS_PER_WINDOW = "ALERTS_PER_WINDOW"
ENV_ALERT_WINDOW_S = "ALERT_WINDOW_S"
ENV_HEARTBEAT_TTL_DAYS = "HEARTBEAT_TTL_DAYS"
# Optional: without the lineage table no drift is computed; without the namespace none is emitted.
ENV_LINEAGE_TABLE = "LINEAGE_TABLE"
ENV_METRICS_NAMESPACE = "METRICS_NAMESPACE"
# Optional: the IoT data-plane endpoint URL the delivery acks are published to. Unset (in AWS), the
# account's iot:Data-ATS endpoint is looked up once per cold start. Set it for a local data plane (moto):
# the lookup names an AWS host even where AWS_ENDPOINT_URL points the other clients elsewhere.
ENV_IOT_DATA_ENDPOINT = "IOT_DATA_ENDPOINT"

# Five pages an hour per device is enough to notice a problem and few enough not to flood a pager.
DEFAULT_ALERTS_PER_WINDOW = 5
DEFAULT_ALERT_WINDOW_S = 3600
DEFAULT_HEARTBEAT_TTL_DAYS = 30


@dataclass(frozen=True)
class IngestConfig:
    events_table: str
    archive_bucket: str
    alert_topic_arn: str
    alerts_per_window: int
    alert_window_s: int
    heartbeat_ttl_days: int
    lineage_table: str | None = None
    metrics_namespace: str | None = None
    iot_data_endpoint: str | None = None

    @property
    def alert_policy(self) -> AlertPolicy:
        return AlertPolicy(limit=self.alerts_per_window, window_s=self.alert_window_s)


def load_config(environ: Mapping[str, str]) -> IngestConfig:
    """Read the settings from an environment mapping (``os.environ`` in the Lambda)."""
    return IngestConfig(
        events_table=_required(environ, ENV_EVENTS_TABLE),
        archive_bucket=_required(environ, ENV_ARCHIVE_BUCKET),
        alert_topic_arn=_required(environ, ENV_ALERT_TOPIC_ARN),
        alerts_per_window=_positive_int(environ, ENV_ALERTS_PER_WINDOW, DEFAULT_ALERTS_PER_WINDOW),
        alert_window_s=_positive_int(environ, ENV_ALERT_WINDOW_S, DEFAULT_ALERT_WINDOW_S),
        heartbeat_ttl_days=_positive_int(environ, ENV_HEARTBEAT_TTL_DAYS, DEFAULT_HEARTBEAT_TTL_DAYS),
        lineage_table=environ.get(ENV_LINEAGE_TABLE) or None,
        metrics_namespace=environ.get(ENV_METRICS_NAMESPACE) or None,
        iot_data_endpoint=environ.get(ENV_IOT_DATA_ENDPOINT, "").strip() or None,
    )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is required and is not set")
    return value


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive")
    return value
