"""Lifecycle steps as real subprocesses: ``Install`` to completion, then ``Run`` as a long-lived process.

Scripts run with ``sh -c`` in the component's work folder, as the nucleus runs them on Linux. Each
component's stderr goes to ``<root>/logs/<component>.log``; its stdout to ``<component>.stdout`` (kept
apart so a component's machine-readable stdout, such as a run summary, stays parseable).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .errors import LifecycleError
from .recipe import Step


class ComponentState(StrEnum):
    """The nucleus's lifecycle states, as reported to the cloud."""

    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    ERRORED = "ERRORED"
    BROKEN = "BROKEN"


# The nucleus's default Install/Run timeouts are longer, but a local run that hangs should fail quickly.
DEFAULT_INSTALL_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


def should_skip(skipif: str | None, env: Mapping[str, str]) -> bool:
    """``Skipif: onpath <exe>`` / ``exists <file>`` (already interpolated)."""
    if skipif is None:
        return False
    kind, _, target = skipif.partition(" ")
    target = target.strip()
    if kind == "onpath":
        return shutil.which(target, path=env.get("PATH")) is not None
    if kind == "exists":
        return Path(target).expanduser().exists()
    raise LifecycleError(f"Skipif {skipif!r}: only 'onpath X' and 'exists X' are defined")


@dataclass(frozen=True)
class LogPaths:
    stdout: Path
    stderr: Path

    @classmethod
    def for_component(cls, log_dir: Path, component: str) -> LogPaths:
        log_dir.mkdir(parents=True, exist_ok=True)
        return cls(stdout=log_dir / f"{component}.stdout", stderr=log_dir / f"{component}.log")


def run_to_completion(
    component: str, phase: str, step: Step, *, cwd: Path, env: Mapping[str, str], logs: LogPaths
) -> None:
    """Run one finite step (Install); a non-zero exit or a timeout fails the component."""
    timeout = step.timeout_s if step.timeout_s is not None else DEFAULT_INSTALL_TIMEOUT_S
    proc = start(step, cwd=cwd, env=env, logs=logs)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate(proc)
        raise LifecycleError(f"{component} {phase} timed out after {timeout:.0f} s") from None
    if code != 0:
        raise LifecycleError(f"{component} {phase} exited with code {code}: see {logs.stderr}")


def start(step: Step, *, cwd: Path, env: Mapping[str, str], logs: LogPaths) -> subprocess.Popen[bytes]:
    """Start the Run step in its own session, so stopping it stops everything the script started."""
    with logs.stdout.open("ab") as out, logs.stderr.open("ab") as err:
        return subprocess.Popen(  # noqa: S603 - the script is the recipe's, as on a device
            ["/bin/sh", "-c", step.script],
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the process group (what the nucleus sends on stop), SIGKILL after the grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
    return proc.returncode
