"""Model hot-swap: a new model is loaded and validated (contract metadata, input/output shape, a probe
inference) in the background and handed to the app loop, which swaps it in between micro-batches, so no
sample is dropped (AWS-FACTS §2.9, option A). A model that fails validation is logged and counted; the
running model stays.

Two triggers:
- on a device, :class:`ModelWatcher` hears ``model`` configuration updates over IPC. It also takes part in
  the deployment's validation phase (``SubscribeToValidateConfigurationUpdates``): a configuration whose
  ``model`` is malformed, or names an artifact that is on disk but fails validation, is vetoed with
  ``SendConfigurationValidityReport`` REJECTED, so the deployment fails instead of half-applying;
- locally, :class:`FileModelWatcher` polls a model file and reloads it when it changes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import ModelRef
from .errors import ConfigError, ModelError
from .logs import get_logger
from .model import LoadedModel, ModelLoader

if TYPE_CHECKING:
    from awsiot.greengrasscoreipc.model import ConfigurationValidityReport

log = get_logger("hotswap")
MODEL_KEY = "model"


class ConfigIpc(Protocol):
    """The two ``GreengrassCoreIPCClientV2`` methods the watcher needs."""

    def get_configuration(self, *, key_path: list[str]) -> Any: ...

    def subscribe_to_configuration_update(self, *, key_path: list[str], **callbacks: Any) -> Any: ...


class ValidationIpc(Protocol):
    """The two ``GreengrassCoreIPCClientV2`` methods of the pre-apply veto."""

    def subscribe_to_validate_configuration_updates(self, **callbacks: Any) -> Any: ...

    def send_configuration_validity_report(
        self, *, configuration_validity_report: ConfigurationValidityReport
    ) -> Any: ...


def read_model_ref(ipc: ConfigIpc) -> ModelRef:
    """``GetConfiguration(["model"])`` -> :class:`ModelRef` (the update event itself carries no value)."""
    response = ipc.get_configuration(key_path=[MODEL_KEY])
    value = getattr(response, "value", None)
    if not isinstance(value, Mapping):
        raise ConfigError(f"component configuration has no '{MODEL_KEY}' object: {value!r}")
    return ModelRef.from_config(value)


class ModelWatcher:
    def __init__(
        self,
        ipc: ConfigIpc,
        *,
        loader: ModelLoader,
        kernel_root: Path,
        current: ModelRef | None,
        attempts: int = 3,
        retry_delay_s: float = 2.0,
    ) -> None:
        self._ipc = ipc
        self._loader = loader
        self._kernel_root = kernel_root
        self._current = current
        self._attempts = attempts
        self._retry_delay_s = retry_delay_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready: queue.Queue[LoadedModel] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._operation: Any = None
        self._validation_operation: Any = None
        self._validation_ipc: Any = None
        self.rejected = 0

    def start(self) -> None:
        _response, self._operation = self._ipc.subscribe_to_configuration_update(
            key_path=[MODEL_KEY],
            on_stream_event=self._on_event,
            on_stream_error=self._on_error,
            on_stream_closed=lambda: log.warning("configuration update stream closed"),
        )
        self._thread = threading.Thread(target=self._loop, name="model-watcher", daemon=True)
        self._thread.start()

    def _on_event(self, _event: Any) -> None:
        # Runs on the SDK's executor: only signal, never load here (an exception would close the stream).
        self._wake.set()

    def _on_error(self, error: Exception) -> bool:
        log.error("configuration update stream error", extra={"error": str(error)})
        return False

    def take(self) -> LoadedModel | None:
        """The newest validated model waiting to be swapped in, if any (non-blocking)."""
        return _newest(self._ready)

    def check_now(self) -> None:
        """Handle one update synchronously (used by the loop thread and by tests)."""
        try:
            ref = read_model_ref(self._ipc)
        except ConfigError as exc:
            self.rejected += 1
            log.warning("model configuration rejected", extra={"error": str(exc)})
            return
        # IPC failures are SDK-specific exception types; the watcher must survive them.
        except Exception as exc:  # noqa: BLE001
            log.warning("GetConfiguration failed", extra={"error": str(exc)})
            return
        if ref == self._current:
            return
        path = ref.path(self._kernel_root)
        for attempt in range(1, self._attempts + 1):
            try:
                model = self._loader.load(path, ref.sha256)
            except ModelError as exc:
                log.warning(
                    "new model not loadable",
                    extra={"error": str(exc), "attempt": attempt, "model_component_version": ref.version},
                )
                # The artifact may still be landing when the configuration update arrives.
                if attempt < self._attempts and not self._stop.wait(self._retry_delay_s):
                    continue
                self.rejected += 1
                log.warning("model refused, keeping the running model", extra={"error": str(exc)})
                return
            self._current = ref
            self._ready.put(model)
            log.info(
                "new model validated",
                extra={"model_version": model.metadata.model_version, "sha256": model.sha256},
            )
            return

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if not self._stop.is_set():
                self.check_now()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for operation in (self._operation, self._validation_operation):
            close = getattr(operation, "close", None)
            if close is not None:
                close()

    # --- pre-apply veto -------------------------------------------------------------------------------

    def start_validation(self, ipc: ValidationIpc) -> None:
        """Vote on every deployment's new configuration before the nucleus applies it."""
        self._validation_ipc = ipc
        _response, self._validation_operation = ipc.subscribe_to_validate_configuration_updates(
            on_stream_event=self._on_validate,
            on_stream_error=self._on_error,
            on_stream_closed=lambda: log.warning("configuration validation stream closed"),
        )

    def validate(self, configuration: Mapping[str, Any]) -> str | None:
        """None if acceptable, else the reason to reject (shown in the deployment's status)."""
        value = configuration.get(MODEL_KEY)
        if not isinstance(value, Mapping):
            return f"configuration has no '{MODEL_KEY}' object"
        try:
            ref = ModelRef.from_config(value)
        except ConfigError as exc:
            return str(exc)
        path = ref.path(self._kernel_root)
        # The new model component's artifact may not be on disk yet; then the post-update load decides.
        if path.exists():
            try:
                self._loader.load(path, ref.sha256)
            except ModelError as exc:
                return f"model {ref.version} fails validation: {exc}"
        return None

    def _on_validate(self, event: Any) -> None:
        # Loading a model takes a while: never on the SDK's callback thread.
        threading.Thread(target=self._report, args=(event,), name="config-validation", daemon=True).start()

    def _report(self, event: Any) -> None:
        inner = getattr(event, "validate_configuration_update_event", None)
        configuration = getattr(inner, "configuration", None) or {}
        deployment_id = getattr(inner, "deployment_id", None)
        reason = self.validate(configuration)
        # Imported only here: the SDK (awscrt) costs RSS that a component without IPC does not need.
        from awsiot.greengrasscoreipc.model import (  # noqa: PLC0415
            ConfigurationValidityReport,
            ConfigurationValidityStatus,
        )

        status = (
            ConfigurationValidityStatus.ACCEPTED if reason is None else ConfigurationValidityStatus.REJECTED
        )
        if reason is not None:
            self.rejected += 1
            log.warning("configuration vetoed", extra={"deployment_id": deployment_id, "reason": reason})
        report = ConfigurationValidityReport(
            status=status, deployment_id=deployment_id, message=reason or "model configuration valid"
        )
        try:
            self._validation_ipc.send_configuration_validity_report(configuration_validity_report=report)
        # IPC failures are SDK-specific exception types; the watcher must survive them.
        except Exception as exc:  # noqa: BLE001
            log.error("SendConfigurationValidityReport failed", extra={"error": str(exc)})  # noqa: TRY400


class FileModelWatcher:
    """Reload a local model file when it changes (mtime, size); a bad file is refused, the old model stays."""

    def __init__(self, path: Path, *, loader: ModelLoader, poll_s: float = 1.0) -> None:
        self._path = path
        self._loader = loader
        self._poll_s = poll_s
        self._seen = self._stamp()
        self._ready: queue.Queue[LoadedModel] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rejected = 0

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def check_now(self) -> None:
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        self._seen = stamp
        try:
            model = self._loader.load(self._path)
        except ModelError as exc:
            self.rejected += 1
            log.warning("model file refused, keeping the running model", extra={"error": str(exc)})
            return
        log.info("new model file validated", extra={"model_version": model.metadata.model_version})
        self._ready.put(model)

    def take(self) -> LoadedModel | None:
        """The newest validated model waiting to be swapped in, if any (non-blocking)."""
        return _newest(self._ready)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="model-file-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.check_now()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _newest(ready: queue.Queue[LoadedModel]) -> LoadedModel | None:
    # Drains the queue: models validated in between are superseded, only the last one is swapped in.
    latest = None
    while True:
        try:
            latest = ready.get_nowait()
        except queue.Empty:
            return latest
