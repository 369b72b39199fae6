"""Wiring shared by the CLI and the scheduled handler: configuration plus adapters with default clients.

boto3 honours ``AWS_ENDPOINT_URL`` (moto) and ``AWS_ENDPOINT_URL_GREENGRASSV2`` (our Greengrass fake), so
the same wiring runs against real AWS or the local stand-ins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lambdas.lifecycle.adapters import (
    DynamoRegistry,
    EmfAttentionMetrics,
    EventsTableHeartbeats,
    GreengrassFleet,
)
from lambdas.lifecycle.config import LifecycleConfig, load_config
from lambdas.lifecycle.core import AttentionMetrics, Deployments, Fleet, Heartbeats
from lambdas.lifecycle.registry import Registry
from lambdas.publisher.adapters import GreengrassDeployments


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Services:
    config: LifecycleConfig
    registry: Registry
    deployments: Deployments
    fleet: Fleet
    heartbeats: Heartbeats | None
    clock: Callable[[], datetime] = field(default=utc_now)
    # Waiting for the lifecycle lock (injected in tests, where the clock is not the wall clock).
    sleep: Callable[[float], None] = field(default=time.sleep)
    # The scheduled check's LifecycleNeedsAttention metric (only the handler writes it); None when no
    # namespace is configured.
    attention_metrics: AttentionMetrics | None = None


def build_services(environ: Mapping[str, str]) -> Services:
    config = load_config(environ)
    return Services(
        config=config,
        registry=DynamoRegistry(config.lineage_table),
        deployments=GreengrassDeployments(),
        fleet=GreengrassFleet(),
        heartbeats=EventsTableHeartbeats(config.events_table) if config.events_table else None,
        attention_metrics=(
            EmfAttentionMetrics(config.metrics_namespace) if config.metrics_namespace else None
        ),
    )
