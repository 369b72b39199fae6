"""Configuration from a JSON file, for runs on a local device runner that has no Greengrass IPC server.

The local device runner (``python -m device``) plays the nucleus: it merges the deployment's
configuration and writes it to a file whose path it puts in ``$EDGEML_LOCAL_CONFIG_FILE``, as a nucleus
puts its IPC socket path in ``$AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``. This class offers
the two configuration calls of ``GreengrassCoreIPCClientV2`` that the model watcher uses, so a
configuration update (a new model) takes exactly the hot-swap path it takes on a device. It has no
pub/sub: with it, sensor input and anomaly output must use MQTT.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .logs import get_logger

log = get_logger("local_config")

ENV_LOCAL_CONFIG_FILE = "EDGEML_LOCAL_CONFIG_FILE"
POLL_S = 0.2


@dataclass(frozen=True)
class ConfigurationValue:
    """Shaped like ``GetConfigurationResponse``: the caller reads ``.value``."""

    component_name: str | None
    value: Any


@dataclass(frozen=True)
class ConfigurationUpdate:
    """Shaped like ``ConfigurationUpdateEvent``: the key path that changed (the value is read again)."""

    key_path: list[str]


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
