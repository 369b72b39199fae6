"""The device runner: what a nucleus does with our components, on this machine, as real processes.

For one thing name it (1) reads the thing's desired deployments from the Greengrass v2 control plane,
(2) fetches each component's recipe and artifacts, checks digests, unarchives ZIPs, (3) merges the
deployment's configuration into the recipe's defaults, (4) runs ``Install`` then ``Run`` in dependency
order with recipe variables interpolated, and (5) reports deployment status and component states back.

Local policy (the documented differences from a nucleus, see :class:`LocalPolicy`): there is no IPC
server. A component's configuration is written to a JSON file whose path is in
``$EDGEML_LOCAL_CONFIG_FILE``; configuration updates rewrite that file (the component watches it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from standins.greengrass_fake.state import InstalledComponentReport

from . import lifecycle
from .errors import DeviceError, LifecycleError, UnsupportedRecipeError
from .lifecycle import ComponentState, LogPaths
from .recipe import ComponentPlan, DevicePlatform, plan_component
from .recipe_vars import RecipeContext, interpolate, interpolate_configuration

LOG = logging.getLogger("device.runner")

# Set by this runner for every lifecycle step; read by components that support local runs.
ENV_LOCAL_CONFIG_FILE = "EDGEML_LOCAL_CONFIG_FILE"
ENV_REUSE_PYTHON = "EDGEML_REUSE_PYTHON"
NUCLEUS_VERSION = "2.14.0"


class ControlPlane(Protocol):
    """The device side of the Greengrass v2 control plane (``FakeAdminClient`` implements it)."""

    def desired_deployments(self, thing_name: str) -> list[dict[str, Any]]: ...

    def recipe(self, name: str, version: str) -> dict[str, Any]: ...

    def report_device_status(
        self,
        thing_name: str,
        deployment_id: str,
        status: str,
        installed_components: Sequence[InstalledComponentReport] | None = None,
        *,
        reason: str | None = None,
    ) -> None: ...

    def report_installed_components(
        self, thing_name: str, installed_components: Sequence[InstalledComponentReport]
    ) -> None: ...


class ArtifactStore(Protocol):
    def get(self, uri: str) -> bytes: ...


class S3ArtifactStore:
    """Artifacts from S3 (moto locally): the nucleus downloads them with the device's TES role."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def get(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        data: bytes = self._s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        return data


@dataclass(frozen=True)
class LocalPolicy:
    """Every way this runner differs from a nucleus, explicit and off unless asked for.

    ``interpolate_component_configuration``: the nucleus option of the same name (default false there
    too): recipe variables such as ``{iot:thingName}`` inside configuration values are resolved.
    ``reuse_python``: an interpreter that already has the components' dependencies; it is passed to
    every lifecycle step as ``$EDGEML_REUSE_PYTHON``, and a recipe's Install step may use it instead of
    creating a venv from the package index (our inference component's recipe does).
    """

    interpolate_component_configuration: bool = False
    reuse_python: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class InstalledComponent:
    plan: ComponentPlan
    configuration: dict[str, object]
    context: RecipeContext
    config_file: Path
    logs: LogPaths
    state: ComponentState = ComponentState.NEW
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None

    def report(self) -> InstalledComponentReport:
        return InstalledComponentReport(
            name=self.plan.name, version=self.plan.version, lifecycle_state=self.state.value
        )


@dataclass(frozen=True)
class AppliedDeployment:
    deployment_ids: tuple[str, ...]
    components: dict[str, ComponentState]


def deep_merge(base: Mapping[str, object], update: Mapping[str, object]) -> dict[str, object]:
    """Greengrass merges configuration key by key, recursively, not by replacing whole objects."""
    merged: dict[str, object] = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def check_digest(data: bytes, digest: str | None, algorithm: str, uri: str) -> None:
    if digest is None:
        return
    if algorithm != "SHA-256":
        raise UnsupportedRecipeError(f"digest algorithm {algorithm} of {uri} is not supported")
    if base64.b64encode(hashlib.sha256(data).digest()).decode() != digest:
        raise DeviceError(f"artifact {uri} does not match its recorded digest (ARTIFACT_CHECKSUM_MISMATCH)")


def _mode(read: str, execute: str) -> int:
    # The owner keeps write permission so the runner can clean up; the recipe controls read and execute.
    bits = {"NONE": (0, 0), "OWNER": (stat.S_IRUSR, stat.S_IXUSR), "ALL": (0o444, 0o111)}
    return stat.S_IWUSR | bits[read][0] | bits[execute][1]


def dependency_order(plans: Mapping[str, ComponentPlan]) -> list[str]:
    """Dependencies first; a dependency missing from the deployment or out of range fails it."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise DeviceError(f"dependency cycle through {name}")
        visiting.add(name)
        for dep in plans[name].dependencies:
            if dep.name not in plans:
                raise DeviceError(f"{name} depends on {dep.name}, which is not in the deployment")
            if not dep.allows(plans[dep.name].version):
                raise DeviceError(
                    f"{name} needs {dep.name} {dep.requirement}; the deployment has {plans[dep.name].version}"
                )
            visit(dep.name)
        visiting.discard(name)
        order.append(name)

    for name in sorted(plans):
        visit(name)
    return order


class DeviceRunner:
    def __init__(
        self,
        *,
        thing_name: str,
        root: Path,
        control: ControlPlane,
        store: ArtifactStore,
        policy: LocalPolicy | None = None,
        device_platform: DevicePlatform | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.thing_name = thing_name
        self.root = root.resolve()
        self._control = control
        self._store = store
        self._policy = policy if policy is not None else LocalPolicy()
        self._platform = device_platform if device_platform is not None else DevicePlatform.of_host()
        self._region = region
        self.components: dict[str, InstalledComponent] = {}

    # --- resolve ---------------------------------------------------------------------------------------

    def _desired(self) -> tuple[tuple[str, ...], dict[str, tuple[str, dict[str, object]]]]:
        views = sorted(self._control.desired_deployments(self.thing_name), key=lambda v: v.get("created", 0))
        if not views:
            raise DeviceError(f"no deployment targets {self.thing_name} or its thing groups")
        wanted: dict[str, tuple[str, dict[str, object]]] = {}
        for view in views:
            for name, spec in view["components"].items():
                if spec.get("reset"):
                    raise UnsupportedRecipeError(f"{name}: configurationUpdate.reset is not supported")
                wanted[name] = (str(spec["version"]), dict(spec.get("merge") or {}))
        return tuple(str(v["deployment_id"]) for v in views), wanted

    def _fetch(self, plan: ComponentPlan) -> None:
        artifacts = self.root / "packages" / "artifacts" / plan.name / plan.version
        unarchived = self.root / "packages" / "artifacts-unarchived" / plan.name / plan.version
        artifacts.mkdir(parents=True, exist_ok=True)
        for artifact in plan.artifacts:
            data = self._store.get(artifact.uri)
            check_digest(data, artifact.digest, artifact.algorithm, artifact.uri)
            target = artifacts / artifact.file_name
            if target.exists():
                target.chmod(stat.S_IRUSR | stat.S_IWUSR)
            target.write_bytes(data)
            mode = _mode(artifact.read, artifact.execute)
            target.chmod(mode)
            if artifact.unarchive == "ZIP":
                # A ZIP unarchives into a folder named after the archive (AWS-FACTS §2.1).
                dest = unarchived / Path(artifact.file_name).stem
                with zipfile.ZipFile(target) as zf:
                    for member in zf.infolist():
                        if member.filename.startswith("/") or ".." in Path(member.filename).parts:
                            raise DeviceError(f"{artifact.uri} has an unsafe entry {member.filename!r}")
                    zf.extractall(dest)
                for path in dest.rglob("*"):
                    if path.is_file():
                        path.chmod(mode)

    def _install_record(self, plan: ComponentPlan, merge: Mapping[str, object]) -> InstalledComponent:
        work = self.root / "work" / plan.name
        work.mkdir(parents=True, exist_ok=True)
        context = RecipeContext(
            component=plan.name,
            thing_name=self.thing_name,
            kernel_root=self.root,
            artifacts_path=self.root / "packages" / "artifacts" / plan.name / plan.version,
            decompressed_path=self.root / "packages" / "artifacts-unarchived" / plan.name / plan.version,
            work_path=work,
            configuration={},
        )
        configuration = deep_merge(plan.default_configuration, merge)
        if self._policy.interpolate_component_configuration:
            resolved = interpolate_configuration(configuration, context)
            assert isinstance(resolved, dict)  # a mapping stays a mapping  # noqa: S101
            configuration = resolved
        record = InstalledComponent(
            plan=plan,
            configuration=configuration,
            context=replace(context, configuration=configuration),
            config_file=self.root / "config" / f"{plan.name}.json",
            logs=LogPaths.for_component(self.root / "logs", plan.name),
        )
        self._write_config(record)
        return record

    def _write_config(self, record: InstalledComponent) -> None:
        record.config_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.configuration, indent=2, sort_keys=True), encoding="utf-8")
        # Atomic replace: a watcher never reads a half-written file.
        tmp.replace(record.config_file)

    def _env(self, record: InstalledComponent, step_env: Mapping[str, str]) -> dict[str, str]:
        env = {
            **os.environ,
            "AWS_IOT_THING_NAME": self.thing_name,
            "AWS_REGION": self._region,
            "AWS_DEFAULT_REGION": self._region,
            "GGC_VERSION": NUCLEUS_VERSION,
            ENV_LOCAL_CONFIG_FILE: str(record.config_file),
            **self._policy.extra_env,
        }
        if self._policy.reuse_python:
            env[ENV_REUSE_PYTHON] = self._policy.reuse_python
        for scope in (record.plan.setenv, step_env):
            env.update({k: interpolate(v, record.context) for k, v in scope.items()})
        return env

    # --- run -------------------------------------------------------------------------------------------

    def deploy(self) -> AppliedDeployment:
        """Resolve, fetch, install and start everything this device should run; report the outcome."""
        deployment_ids, wanted = self._desired()
        try:
            plans = {}
            for name, (version, _merge) in wanted.items():
                plans[name] = plan_component(self._control.recipe(name, version), self._platform)
            for name in dependency_order(plans):
                plan = plans[name]
                self._fetch(plan)
                record = self._install_record(plan, wanted[name][1])
                self.components[name] = record
                self._install(record)
                self._start(record)
        except DeviceError as exc:
            for deployment_id in deployment_ids:
                self._control.report_device_status(
                    self.thing_name, deployment_id, "FAILED", self._reports(), reason=str(exc)
                )
            raise
        for deployment_id in deployment_ids:
            self._control.report_device_status(self.thing_name, deployment_id, "SUCCEEDED", self._reports())
        LOG.info("deployment applied", extra={"thing": self.thing_name, "components": sorted(plans)})
        return AppliedDeployment(deployment_ids, {n: c.state for n, c in self.components.items()})

    def _install(self, record: InstalledComponent) -> None:
        step = record.plan.install
        if step is not None:
            env = self._env(record, step.setenv)
            skipif = interpolate(step.skipif, record.context) if step.skipif else None
            if not lifecycle.should_skip(skipif, env):
                script = interpolate(step.script, record.context)
                try:
                    lifecycle.run_to_completion(
                        record.plan.name,
                        "Install",
                        replace(step, script=script),
                        cwd=record.context.work_path,
                        env=env,
                        logs=record.logs,
                    )
                except LifecycleError:
                    record.state = ComponentState.BROKEN
                    raise
        record.state = ComponentState.INSTALLED

    def _start(self, record: InstalledComponent) -> None:
        step = record.plan.run
        if step is None:
            # Nothing to run (a model component: its artifact is all it brings).
            record.state = ComponentState.FINISHED
            return
        env = self._env(record, step.setenv)
        skipif = interpolate(step.skipif, record.context) if step.skipif else None
        if lifecycle.should_skip(skipif, env):
            record.state = ComponentState.FINISHED
            return
        script = interpolate(step.script, record.context)
        record.state = ComponentState.STARTING
        record.process = lifecycle.start(
            replace(step, script=script), cwd=record.context.work_path, env=env, logs=record.logs
        )
        record.state = ComponentState.RUNNING

    def _reports(self) -> list[InstalledComponentReport]:
        return [c.report() for c in self.components.values()]

    def refresh(self) -> dict[str, ComponentState]:
        """Pick up Run processes that exited (FINISHED on 0, ERRORED otherwise) and report the states."""
        changed = False
        for record in self.components.values():
            if record.process is not None and record.state is ComponentState.RUNNING:
                code = record.process.poll()
                if code is not None:
                    record.exit_code = code
                    record.state = ComponentState.FINISHED if code == 0 else ComponentState.ERRORED
                    changed = True
        if changed:
            self._control.report_installed_components(self.thing_name, self._reports())
        return {n: c.state for n, c in self.components.items()}

    def update_configuration(self, component: str, merge: Mapping[str, object]) -> None:
        """A configuration-only deployment: merged and handed to the running component, no restart."""
        record = self.components.get(component)
        if record is None:
            raise DeviceError(f"{component} is not installed on {self.thing_name}")
        configuration = deep_merge(record.configuration, merge)
        if self._policy.interpolate_component_configuration:
            resolved = interpolate_configuration(configuration, record.context)
            assert isinstance(resolved, dict)  # noqa: S101
            configuration = resolved
        record.configuration = configuration
        record.context = replace(record.context, configuration=configuration)
        self._write_config(record)

    def stop(self) -> dict[str, int | None]:
        """Stop every running component (reverse dependency order) and report the final states."""
        for record in reversed(list(self.components.values())):
            if record.process is not None and record.process.poll() is None:
                record.state = ComponentState.STOPPING
                record.exit_code = lifecycle.terminate(record.process)
                # Stopped on request: a clean exit or death by our SIGTERM is FINISHED, as on a device;
                # anything else (a crash while stopping, a SIGKILL after the grace period) is ERRORED.
                clean = record.exit_code in (0, -signal.SIGTERM)
                record.state = ComponentState.FINISHED if clean else ComponentState.ERRORED
            elif record.process is not None and record.exit_code is None:
                record.exit_code = record.process.returncode
        if self.components:
            try:
                self._control.report_installed_components(self.thing_name, self._reports())
            except Exception as exc:  # noqa: BLE001 - the control plane may already be gone at shutdown
                LOG.warning("final status report failed", extra={"error": str(exc)})
        return {n: c.exit_code for n, c in self.components.items()}

    def stdout(self, component: str) -> str:
        return self.components[component].logs.stdout.read_text(encoding="utf-8")

    def __enter__(self) -> DeviceRunner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
