"""Start and stop local stand-in servers as real child processes.

Every stand-in is a context manager: it starts the process, waits until its port accepts connections,
and on exit terminates it (SIGTERM, then SIGKILL), so nothing is left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


class StandInError(RuntimeError):
    """A local stand-in could not be started."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(
    proc: subprocess.Popen[bytes], host: str, port: int, *, name: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StandInError(f"{name} exited with code {proc.returncode} before listening on {host}:{port}")
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise StandInError(f"{name} did not listen on {host}:{port} within {timeout_s:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


@dataclass
class ManagedProcess:
    """One child process listening on one TCP port."""

    name: str
    argv: Sequence[str]
    port: int
    host: str = LOOPBACK
    log_path: Path | None = None
    env: Mapping[str, str] | None = None
    startup_timeout_s: float = 30.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argv is built by this module, never from input
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else {**os.environ, **self.env},
                start_new_session=True,  # keep terminal signals for the parent; we stop it ourselves
            )
        finally:
            if self.log_path and not isinstance(log, int):
                log.close()
        try:
            wait_for_port(self._proc, self.host, self.port, name=self.name, timeout_s=self.startup_timeout_s)
        except StandInError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)

    def kill(self) -> None:
        """SIGKILL, as an outage would: no clean shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise StandInError("mosquitto is not installed: run `make system-deps` (Debian package `mosquitto`)")
    return found


def mosquitto(workdir: Path, *, port: int | None = None, log_path: Path | None = None) -> ManagedProcess:
    """A real MQTT broker on loopback: the local stand-in for IoT Core's message broker."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\nmax_inflight_messages 100\n",
        encoding="utf-8",
    )
    return ManagedProcess(
        name="mosquitto", argv=[mosquitto_binary(), "-c", str(conf)], port=port, log_path=log_path
    )


def moto_server(*, port: int | None = None, log_path: Path | None = None) -> ManagedProcess:
    """moto in server mode: the local stand-in for S3, IoT, SageMaker and the other AWS APIs."""
    port = port or free_port()
    return ManagedProcess(
        name="moto-server",
        argv=[sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
        port=port,
        log_path=log_path,
    )


def greengrass_fake(
    *, port: int | None = None, s3_endpoint: str | None = None, log_path: Path | None = None
) -> ManagedProcess:
    """Our Greengrass v2 control-plane fake (moto has none)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "standins.greengrass_fake", "--host", LOOPBACK, "--port", str(port)]
    if s3_endpoint:
        argv += ["--s3-endpoint", s3_endpoint]
    return ManagedProcess(name="greengrass-v2-fake", argv=argv, port=port, log_path=log_path)
