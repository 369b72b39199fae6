"""Configuration from a JSON file, for runs on a local device runner that has no Greengrass IPC server.

The local device runner (``python -m device``) plays the nucleus: it merges the deployment's
configuration and writes it to a file whose path it puts in ``$EDGEML_LOCAL_CONFIG_FILE``, as a nucleus
puts its IPC socket path in ``$AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``. This class offers
the configuration calls of ``GreengrassCoreIPCClientV2`` that the model watcher uses, so a configuration
update (a new model) takes exactly the hot-swap path it takes on a device, including the deployment's
validation phase. It has no pub/sub: with it, sensor input and anomaly output must use MQTT.

The validation phase (``SubscribeToValidateConfigurationUpdates`` / ``SendConfigurationValidityReport``)
uses three files next to the configuration file ``<dir>/<name>.json`` (the runner's side is
``device/validation.py``; both sides must agree on these names and shapes):

- ``<name>.validating``: written by a subscribed component (``{"pid": ...}``), removed when it unsubscribes;
  the runner waits only for components that have it, as a nucleus asks only subscribed components;
- ``<name>.proposed.json``: written by the runner before it applies a configuration,
  ``{"deploymentId": ..., "configuration": {...}}`` (the ``ValidateConfigurationUpdateEvent`` payload);
- ``<name>.validity.<deploymentId, percent-encoded but for A-Za-z0-9_.->.json``: the component's answer,
  ``{"deploymentId": ..., "status": "ACCEPTED" | "REJECTED", "message": ...}`` (the
  ``ConfigurationValidityReport`` payload).

Every file is written to a temporary name and renamed, so the other side never reads half a document.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError
from .logs import get_logger

log = get_logger("local_config")

ENV_LOCAL_CONFIG_FILE = "EDGEML_LOCAL_CONFIG_FILE"
POLL_S = 0.2
VALIDITY_STATUSES = ("ACCEPTED", "REJECTED")


@dataclass(frozen=True)
class ConfigurationValue:
    """Shaped like ``GetConfigurationResponse``: the caller reads ``.value``."""

    component_name: str | None
    value: Any


@dataclass(frozen=True)
class ConfigurationUpdate:
    """Shaped like ``ConfigurationUpdateEvent``: the key path that changed (the value is read again)."""

    key_path: list[str]


@dataclass(frozen=True)
class ValidateConfigurationUpdateEvent:
    """Shaped like the SDK's event of the same name: the proposed configuration and its deployment."""

    configuration: dict[str, Any]
    deployment_id: str


@dataclass(frozen=True)
class ValidateConfigurationUpdateEvents:
    """Shaped like the SDK's stream event (a tagged union with this one member)."""

    validate_configuration_update_event: ValidateConfigurationUpdateEvent


class ValidityReport(Protocol):
    """What ``SendConfigurationValidityReport`` reads from the SDK's ``ConfigurationValidityReport``."""

    @property
    def status(self) -> str | None: ...

    @property
    def deployment_id(self) -> str | None: ...

    @property
    def message(self) -> str | None: ...


def subscribed_marker(config_file: Path) -> Path:
    return config_file.with_suffix(".validating")


def proposal_file(config_file: Path) -> Path:
    return config_file.with_suffix(".proposed.json")


def validity_file(config_file: Path, deployment_id: str) -> Path:
    # Deployment ids are UUIDs in practice; percent-encoding anything else keeps any id inside the folder.
    safe = re.sub(r"[^A-Za-z0-9_.-]", lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), deployment_id)
    return config_file.with_suffix(f".validity.{safe}.json")


def write_json_atomic(path: Path, document: object) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _at(document: Any, key_path: list[str]) -> Any:
    value = document
    for key in key_path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


class _Subscription:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


class FileConfigIpc:
    def __init__(self, path: Path, *, poll_s: float = POLL_S) -> None:
        self._path = path
        self._poll_s = poll_s
        self._subscriptions: list[tuple[_Subscription, threading.Thread]] = []

    def _read(self) -> Any:
        try:
            return json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read local configuration {self._path}: {exc}") from exc

    def get_configuration(
        self, *, key_path: list[str], component_name: str | None = None
    ) -> ConfigurationValue:
        return ConfigurationValue(component_name=component_name, value=_at(self._read(), key_path))

    def subscribe_to_configuration_update(self, *, key_path: list[str], **callbacks: Any) -> Any:
        """Same keywords as the SDK: ``on_stream_event``, ``on_stream_error``, ``on_stream_closed``."""
        on_stream_event: Callable[[Any], None] = callbacks["on_stream_event"]
        on_stream_error: Callable[[Exception], bool] = callbacks["on_stream_error"]
        on_stream_closed: Callable[[], None] = callbacks["on_stream_closed"]
        subscription = _Subscription()
        current = _at(self._read(), key_path)

        def watch() -> None:
            nonlocal current
            while not subscription.closed.wait(self._poll_s):
                try:
                    latest = _at(self._read(), key_path)
                except ConfigError as exc:
                    # Like an IPC stream error: report it and keep watching (the file may be mid-rewrite).
                    on_stream_error(exc)
                    continue
                if latest != current:
                    current = latest
                    on_stream_event(ConfigurationUpdate(key_path=list(key_path)))
            on_stream_closed()

        thread = threading.Thread(target=watch, name="local-config-watch", daemon=True)
        thread.start()
        self._subscriptions.append((subscription, thread))
        return None, subscription

    def subscribe_to_validate_configuration_updates(self, **callbacks: Any) -> Any:
        """Same keywords as the SDK; each proposal the runner writes is delivered once, on a watch thread."""
        on_stream_event: Callable[[Any], None] = callbacks["on_stream_event"]
        on_stream_error: Callable[[Exception], bool] = callbacks["on_stream_error"]
        on_stream_closed: Callable[[], None] = callbacks["on_stream_closed"]
        subscription = _Subscription()
        proposed = proposal_file(self._path)
        marker = subscribed_marker(self._path)
        delivered: set[str] = set()

        def watch() -> None:
            while not subscription.closed.wait(self._poll_s):
                try:
                    event = self._proposal(proposed)
                except ConfigError as exc:
                    on_stream_error(exc)
                    continue
                if event is None or event.deployment_id in delivered:
                    continue
                delivered.add(event.deployment_id)
                on_stream_event(ValidateConfigurationUpdateEvents(validate_configuration_update_event=event))
            marker.unlink(missing_ok=True)
            on_stream_closed()

        # Written last: the runner must not propose before this process can hear it.
        thread = threading.Thread(target=watch, name="local-config-validate", daemon=True)
        thread.start()
        self._subscriptions.append((subscription, thread))
        write_json_atomic(marker, {"pid": os.getpid()})
        return None, subscription

    @staticmethod
    def _proposal(path: Path) -> ValidateConfigurationUpdateEvent | None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read proposed configuration {path}: {exc}") from exc
        configuration = document.get("configuration") if isinstance(document, Mapping) else None
        deployment_id = document.get("deploymentId") if isinstance(document, Mapping) else None
        if not isinstance(configuration, dict) or not isinstance(deployment_id, str):
            raise ConfigError(f"proposed configuration {path} needs 'deploymentId' and 'configuration'")
        return ValidateConfigurationUpdateEvent(configuration=configuration, deployment_id=deployment_id)

    def send_configuration_validity_report(self, *, configuration_validity_report: ValidityReport) -> None:
        """Writes the report where the runner waits for it (one file per deployment)."""
        report = configuration_validity_report
        if report.status not in VALIDITY_STATUSES:
            raise ConfigError(f"validity status must be one of {VALIDITY_STATUSES}, got {report.status!r}")
        if not report.deployment_id:
            raise ConfigError("a validity report needs the deployment_id of the proposal it answers")
        write_json_atomic(
            validity_file(self._path, report.deployment_id),
            {"deploymentId": report.deployment_id, "status": report.status, "message": report.message},
        )

    def subscribe_to_topic(self, **_kwargs: Any) -> Any:
        raise ConfigError(
            f"${ENV_LOCAL_CONFIG_FILE} provides configuration only, no local pub/sub: use --source mqtt"
        )

    def publish_to_iot_core(self, **_kwargs: Any) -> Any:
        raise ConfigError(
            f"${ENV_LOCAL_CONFIG_FILE} provides configuration only, no IoT Core proxy: use --transport mqtt"
        )

    def close(self) -> None:
        for subscription, thread in self._subscriptions:
            subscription.close()
            thread.join(timeout=2)
