"""Fixtures: small real ONNX models that follow the model contract, and a real mosquitto broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from standins.processes import ManagedProcess, mosquitto_binary
from standins.processes import free_port as free_local_port

MOSQUITTO = "/usr/sbin/mosquitto"

BASE_METADATA = {
    "contract_version": "1",
    "threshold": "3.0",
    "model_version": "20261124T201500Z-test0001",
    "training_data_sha256": "0" * 64,
    "training_metrics": json.dumps({"n_windows": 100}),
    "detector": "last-vs-mean",
    "created_at": "2026-11-24T20:15:00Z",
}


def build_model(
    path: Path,
    *,
    window_length: int = 8,
    channels: Sequence[str] = ("value",),
    scale: float = 1.0,
    metadata: Mapping[str, str] | None = None,
    drop_keys: Sequence[str] = (),
    input_name: str = "window",
    output_name: str = "score",
    input_shape: Sequence[int | str] | None = None,
    output_rank2: bool = False,
) -> Path:
    """score = max over channels of |last sample - window mean| / scale (normalisation inside the graph)."""
    n_channels = len(channels)
    shape: list[int | str] = (
        list(input_shape) if input_shape is not None else ["batch", window_length, n_channels]
    )
    initializers = [
        helper.make_tensor("axis_time", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis_chan", TensorProto.INT64, [1], [1]),
        helper.make_tensor(
            "last_index", TensorProto.INT64, [], [shape[1] - 1 if isinstance(shape[1], int) else 0]
        ),
        helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
    ]
    nodes = [
        helper.make_node("ReduceMean", [input_name, "axis_time"], ["mean"], keepdims=0),
        helper.make_node("Gather", [input_name, "last_index"], ["last"], axis=1),
        helper.make_node("Sub", ["last", "mean"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["absdiff"]),
        helper.make_node("Div", ["absdiff", "scale"], ["scaled"]),
        helper.make_node("ReduceMax", ["scaled", "axis_chan"], [output_name], keepdims=int(output_rank2)),
    ]
    out_shape: list[int | str] = ["batch", 1] if output_rank2 else ["batch"]
    graph = helper.make_graph(
        nodes,
        "last_vs_mean",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)],
        initializer=initializers,
    )
    # onnx 1.23 writes IR version 14 by default; onnxruntime 1.31 reads at most 13.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    props = {**BASE_METADATA, "window_length": str(window_length), "channels": json.dumps(list(channels))}
    props.update(metadata or {})
    for key in drop_keys:
        props.pop(key)
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


ModelFactory = Callable[..., Path]


@pytest.fixture
def make_model(tmp_path: Path) -> ModelFactory:
    counter = iter(range(1000))

    def factory(**kwargs: object) -> Path:
        return build_model(tmp_path / f"model-{next(counter)}.onnx", **kwargs)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def model_path(make_model: ModelFactory) -> Path:
    return make_model()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real mosquitto on a free local port for the whole session; yields the port."""
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A mosquitto of this test alone that keeps persistent sessions across its own stop/start (outages)."""
    port = free_local_port()
    conf = tmp_path / "mosquitto.conf"
    # Started as root, mosquitto drops to its own user, which cannot write into pytest's 0700 tmp dirs.
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n{user}"
        f"persistence true\npersistence_location {tmp_path}/\nautosave_interval 1\n"
    )
    proc = ManagedProcess(name="mosquitto", argv=[mosquitto_binary(), "-c", str(conf)], port=port)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
