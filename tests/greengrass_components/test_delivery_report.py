"""Where a sent event is confirmed: with IPC the nucleus's spool holds it after the component's is emptied,
so the component reads the nucleus's spool setting, warns when it is not on disk, and reports it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from greengrass_components.anomaly_detector.model import load_model
from greengrass_components.anomaly_detector.transport import (
    DISK_SPOOL,
    MEMORY_SPOOL,
    NUCLEUS_COMPONENT,
    InMemoryTransport,
    nucleus_spool_storage,
)

from .conftest import ModelFactory
from .helpers import ListSource
from .test_app import make_app


class ResourceNotFoundError(Exception):
    """Named like the SDK's error for a configuration key that does not exist."""


class NucleusConfig:
    def __init__(self, spooler: object = None, error: Exception | None = None) -> None:
        self._spooler, self._error = spooler, error
        self.calls: list[dict[str, Any]] = []

    def get_configuration(self, *, key_path: list[str], component_name: str | None = None) -> SimpleNamespace:
        self.calls.append({"component_name": component_name, "key_path": key_path})
        if self._error is not None:
            raise self._error
        return SimpleNamespace(component_name=component_name, value=self._spooler)


@pytest.mark.parametrize(
    ("ipc", "expected"),
    [
        (NucleusConfig({"storageType": "Disk", "pluginName": "aws.greengrass.DiskSpooler"}), DISK_SPOOL),
        (NucleusConfig({"storageType": "Memory", "maxSizeInBytes": 2621440}), MEMORY_SPOOL),
        (NucleusConfig({"maxSizeInBytes": 2621440}), MEMORY_SPOOL),  # storageType's default
        (NucleusConfig(error=ResourceNotFoundError("mqtt.spooler")), MEMORY_SPOOL),  # nothing configured
        (NucleusConfig(error=PermissionError("no")), "unknown"),
        (NucleusConfig({"storageType": "Cloud"}), "unknown"),
        (NucleusConfig("Disk"), "unknown"),
    ],
)
def test_the_nucleus_spool_setting_is_read(ipc: NucleusConfig, expected: str) -> None:
    assert nucleus_spool_storage(ipc) == expected
    assert ipc.calls == [{"component_name": NUCLEUS_COMPONENT, "key_path": ["mqtt", "spooler"]}]


def test_the_heartbeat_reports_the_delivery_path(make_model: ModelFactory) -> None:
    model = load_model(make_model())
    delivery = {"transport": "ipc", "nucleus_spool": MEMORY_SPOOL}
    app = make_app(model, ListSource([]), InMemoryTransport(), delivery=delivery)
    app.run()
    assert app.health(0.0)["delivery"] == {**delivery, "ack_subscription": "off"}
