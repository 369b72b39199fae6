from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from greengrass_components.anomaly_detector.config import ModelRef
from greengrass_components.anomaly_detector.hotswap import ModelWatcher
from greengrass_components.anomaly_detector.model import ModelLoader

from .conftest import ModelFactory


class FakeConfigIpc:
    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.get_calls: list[list[str]] = []
        self.subscribe_kwargs: dict[str, Any] = {}
        self.closed = threading.Event()

    def get_configuration(self, *, key_path: list[str]) -> SimpleNamespace:
        self.get_calls.append(key_path)
        return SimpleNamespace(component_name="com.edgeml.AnomalyDetector", value=self.value)

    def subscribe_to_configuration_update(self, **kwargs: Any) -> tuple[object, object]:
        self.subscribe_kwargs = kwargs
        return object(), SimpleNamespace(close=self.closed.set)


def install(kernel_root: Path, version: str, model: Path) -> str:
    target = kernel_root / "packages" / "artifacts" / "com.edgeml.AnomalyModel" / version / "model.onnx"
    target.parent.mkdir(parents=True)
    shutil.copy(model, target)
    return hashlib.sha256(target.read_bytes()).hexdigest()


def test_configuration_update_loads_validated_model(tmp_path: Path, make_model: ModelFactory) -> None:
    sha = install(tmp_path, "1.0.1", make_model(metadata={"model_version": "second"}))
    ipc = FakeConfigIpc({"component": "com.edgeml.AnomalyModel", "version": "1.0.1", "sha256": sha})
    watcher = ModelWatcher(
        ipc, loader=ModelLoader(), kernel_root=tmp_path, current=ModelRef("com.edgeml.AnomalyModel", "1.0.0")
    )
    watcher.start()
    try:
        assert ipc.subscribe_kwargs["key_path"] == ["model"]
        watcher.check_now()
        model = watcher.take()
        assert model is not None
        assert model.metadata.model_version == "second"
        assert ipc.get_calls == [["model"]]
        watcher.check_now()  # same reference again: nothing new to swap
        assert watcher.take() is None
    finally:
        watcher.close()
    assert ipc.closed.is_set()


def test_stream_event_wakes_the_background_loader(tmp_path: Path, make_model: ModelFactory) -> None:
    install(tmp_path, "1.0.1", make_model(metadata={"model_version": "bg"}))
    ipc = FakeConfigIpc({"version": "1.0.1"})
    watcher = ModelWatcher(ipc, loader=ModelLoader(), kernel_root=tmp_path, current=None)
    watcher.start()
    try:
        ipc.subscribe_kwargs["on_stream_event"](SimpleNamespace(configuration_update_event=None))
        for _ in range(200):
            model = watcher.take()
            if model is not None:
                break
            threading.Event().wait(0.01)
        assert model is not None
        assert model.metadata.model_version == "bg"
    finally:
        watcher.close()


def test_bad_model_is_refused_and_running_model_kept(tmp_path: Path, make_model: ModelFactory) -> None:
    install(tmp_path, "1.0.2", make_model())
    ipc = FakeConfigIpc({"version": "1.0.2", "sha256": "0" * 64})
    watcher = ModelWatcher(
        ipc, loader=ModelLoader(), kernel_root=tmp_path, current=None, attempts=2, retry_delay_s=0.01
    )
    watcher.check_now()
    assert watcher.take() is None
    assert watcher.rejected == 1


def test_invalid_model_configuration_is_counted(tmp_path: Path) -> None:
    watcher = ModelWatcher(
        FakeConfigIpc({"version": "latest"}), loader=ModelLoader(), kernel_root=tmp_path, current=None
    )
    watcher.check_now()
    assert watcher.take() is None
    assert watcher.rejected == 1
