"""The device runner: what a nucleus does with our components, on this machine, as real processes.

For one thing name it (1) reads the thing's desired deployments from the Greengrass v2 control plane,
(2) fetches each component's recipe and artifacts, checks digests, unarchives ZIPs, (3) merges the
deployment's configuration into the recipe's defaults, (4) runs ``Install`` then ``Run`` in dependency
order with recipe variables interpolated, and (5) reports deployment status and component states back.

Later deployments (:meth:`DeviceRunner.sync`, polled by ``python -m device``) are applied as a nucleus
applies them: every new recipe and artifact is fetched before anything changes; a component whose version
changed is stopped and started again at the new version; a component whose only change is configuration
gets the merged configuration while it keeps running, unless that configuration changes its
interpolated lifecycle scripts (then it is restarted, as the nucleus restarts it); a new version of a
HARD dependency restarts its dependents, a SOFT one does not (AWS-FACTS §2.9).

Before a new configuration reaches a running component of unchanged version, the deployment's
validation phase runs as on a nucleus (:mod:`device.validation`): a component that subscribed to
``SubscribeToValidateConfigurationUpdates`` gets the proposed configuration and must answer ACCEPTED
within the deployment's ``configurationValidationPolicy.timeoutInSeconds``; REJECTED or no answer fails
the deployment before anything changes.

Local policy (the documented differences from a nucleus, see :class:`LocalPolicy`): there is no IPC
server. A component's configuration is written to a JSON file whose path is in
``$EDGEML_LOCAL_CONFIG_FILE``; configuration updates rewrite that file (the component watches it), and the
validation phase uses files next to it. A failed deployment is not rolled back: the device reports FAILED
and keeps what it was running.
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

from . import lifecycle, validation
from .errors import ComponentVersionConflictError, DeviceError, LifecycleError, UnsupportedRecipeError
from .lifecycle import ComponentState, LogPaths
from .recipe import ComponentPlan, DevicePlatform, Step, plan_component
from .recipe_vars import RecipeContext, interpolate, interpolate_configuration
from .validation import ValidationChannel

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
    # The deployment's configurationUpdate.merge last applied: a new revision is compared with it.
    merge: dict[str, object] = field(default_factory=dict)

    def report(self) -> InstalledComponentReport:
        return InstalledComponentReport(
            name=self.plan.name, version=self.plan.version, lifecycle_state=self.state.value
        )

    @property
    def validation(self) -> ValidationChannel:
        return ValidationChannel(self.config_file)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class AppliedDeployment:
    deployment_ids: tuple[str, ...]
    components: dict[str, ComponentState]


@dataclass(frozen=True)
class DeploymentUpdate:
    """What one later deployment changed on this device, component by component."""

    deployment_ids: tuple[str, ...]
    # A new component or a new version of one (a component with a Run step is started, or restarted).
    installed: tuple[str, ...] = ()
    # The new configuration was handed to the running process; the process kept running.
    reconfigured: tuple[str, ...] = ()
    # Stopped and started again: the interpolated lifecycle changed, or a HARD dependency changed.
    restarted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    components: dict[str, ComponentState] = field(default_factory=dict)


Wanted = dict[str, tuple[str, dict[str, object]]]


@dataclass(frozen=True)
class _Change:
    """One existing component's part in an update, decided before anything is stopped or written."""

    name: str
    configuration: dict[str, object]
    merge: dict[str, object]
    restart: bool
    reinstall: bool


@dataclass(frozen=True)
class _UpdatePlan:
    plans: dict[str, ComponentPlan]
    order: list[str]
    new_versions: frozenset[str]
    changes: dict[str, _Change]
    # Everything stopped before the update is applied: new versions and restarts.
    stopping: frozenset[str]
    removed: tuple[str, ...]


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
        # Every deployment id this device has applied or failed: a failed one is not retried.
        self._seen: set[str] = set()

    # --- resolve ---------------------------------------------------------------------------------------

    def _views(self) -> list[dict[str, Any]]:
        views = sorted(self._control.desired_deployments(self.thing_name), key=lambda v: v.get("created", 0))
        if not views:
            raise DeviceError(f"no deployment targets {self.thing_name} or its thing groups")
        return views

    @staticmethod
    def _wanted(views: Sequence[Mapping[str, Any]]) -> Wanted:
        """Every target's components (a device in several groups runs the union of their deployments).

        A component two targets pin at different versions cannot be resolved: the nucleus combines the
        version requirements of all the device's targets and fails the deployment with
        ``NoAvailableComponentVersionException`` (AWS-FACTS §2.3), so no deployment "wins" here either.
        The same version from several targets is one component; the later deployment's merge is used.
        """
        wanted: Wanted = {}
        pinned_by: dict[str, str] = {}
        for view in views:
            target = str(view.get("target_arn") or view["deployment_id"])
            for name, spec in view["components"].items():
                if spec.get("reset"):
                    raise UnsupportedRecipeError(f"{name}: configurationUpdate.reset is not supported")
                version = str(spec["version"])
                if name in wanted and wanted[name][0] != version:
                    raise ComponentVersionConflictError(
                        f"NoAvailableComponentVersionException: no version of {name} satisfies the "
                        f"requirements of all the device's targets: {pinned_by[name]} requires "
                        f"={wanted[name][0]}, {target} requires ={version}"
                    )
                wanted[name] = (version, dict(spec.get("merge") or {}))
                pinned_by[name] = target
        return wanted

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
        configuration = self._merged(plan.default_configuration, merge, context)
        record = InstalledComponent(
            plan=plan,
            configuration=configuration,
            context=replace(context, configuration=configuration),
            config_file=self.root / "config" / f"{plan.name}.json",
            logs=LogPaths.for_component(self.root / "logs", plan.name),
            merge=dict(merge),
        )
        self._write_config(record)
        return record

    def _merged(
        self, base: Mapping[str, object], merge: Mapping[str, object], context: RecipeContext
    ) -> dict[str, object]:
        configuration = deep_merge(base, merge)
        if self._policy.interpolate_component_configuration:
            resolved = interpolate_configuration(configuration, context)
            assert isinstance(resolved, dict)  # a mapping stays a mapping  # noqa: S101
            configuration = resolved
        return configuration

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
        views = self._views()
        deployment_ids = tuple(str(v["deployment_id"]) for v in views)
        self._seen.update(deployment_ids)
        try:
            wanted = self._wanted(views)
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
        # A new process subscribes (or not) for itself; what an earlier one left must not count.
        record.validation.reset()
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
        """Merge ``merge`` and hand it to the running component, no restart.

        Not a deployment (there is no deployment id to vote on), so there is no validation phase: tests and
        tools use it to push configuration directly; deployments go through :meth:`sync`.
        """
        record = self.components.get(component)
        if record is None:
            raise DeviceError(f"{component} is not installed on {self.thing_name}")
        configuration = self._merged(record.configuration, merge, record.context)
        record.configuration = configuration
        record.context = replace(record.context, configuration=configuration)
        self._write_config(record)

    def stop(self) -> dict[str, int | None]:
        """Stop every running component (reverse dependency order) and report the final states."""
        for record in reversed(list(self.components.values())):
            self._stop_one(record)
        if self.components:
            try:
                self._control.report_installed_components(self.thing_name, self._reports())
            except Exception as exc:  # noqa: BLE001 - the control plane may already be gone at shutdown
                LOG.warning("final status report failed", extra={"error": str(exc)})
        return {n: c.exit_code for n, c in self.components.items()}

    def _stop_one(self, record: InstalledComponent) -> None:
        if record.process is not None and record.process.poll() is None:
            record.state = ComponentState.STOPPING
            record.exit_code = lifecycle.terminate(record.process)
            # Stopped on request: a clean exit or death by our SIGTERM is FINISHED, as on a device;
            # anything else (a crash while stopping, a SIGKILL after the grace period) is ERRORED.
            clean = record.exit_code in (0, -signal.SIGTERM)
            record.state = ComponentState.FINISHED if clean else ComponentState.ERRORED
        elif record.process is not None and record.exit_code is None:
            record.exit_code = record.process.returncode

    # --- later deployments -----------------------------------------------------------------------------

    def sync(self) -> DeploymentUpdate | None:
        """Apply a new deployment (a new revision for one of the device's targets); None if there is none.

        Reports IN_PROGRESS, then SUCCEEDED or FAILED (with the reason), for each new deployment id, with
        every component's state. A failed deployment is not retried and not rolled back: whatever was
        running before keeps running when the failure came before anything changed (a recipe, a
        dependency, an artifact digest, or a component that rejected its new configuration in the
        validation phase), and a component whose new Install failed is left BROKEN.
        """
        if not self.components:
            raise DeviceError(f"{self.thing_name} has applied no deployment yet: deploy() first")
        views = self._views()
        new_ids = tuple(str(v["deployment_id"]) for v in views if str(v["deployment_id"]) not in self._seen)
        if not new_ids:
            return None
        self._seen.update(new_ids)
        for deployment_id in new_ids:
            self._control.report_device_status(self.thing_name, deployment_id, "IN_PROGRESS", self._reports())
        try:
            update = self._apply(new_ids, self._wanted(views), self._validation_timeout_s(views, new_ids))
        except DeviceError as exc:
            for deployment_id in new_ids:
                self._control.report_device_status(
                    self.thing_name, deployment_id, "FAILED", self._reports(), reason=str(exc)
                )
            raise
        for deployment_id in new_ids:
            self._control.report_device_status(self.thing_name, deployment_id, "SUCCEEDED", self._reports())
        LOG.info(
            "deployment update applied",
            extra={
                "thing": self.thing_name,
                "deployment_ids": list(new_ids),
                "installed": list(update.installed),
                "reconfigured": list(update.reconfigured),
                "restarted": list(update.restarted),
                "removed": list(update.removed),
            },
        )
        return update

    @staticmethod
    def _validation_timeout_s(views: Sequence[Mapping[str, Any]], new_ids: tuple[str, ...]) -> float:
        """The newest new deployment's ``configurationValidationPolicy.timeoutInSeconds``, or the default."""
        for view in reversed(views):
            if str(view["deployment_id"]) in new_ids:
                timeout = view.get("configuration_validation_timeout_s")
                return float(timeout) if timeout is not None else validation.DEFAULT_TIMEOUT_S
        return validation.DEFAULT_TIMEOUT_S

    def _validate(self, deployment_id: str, update: _UpdatePlan, timeout_s: float) -> None:
        """The validation phase: every running, subscribed component whose configuration is to change votes.

        As on a nucleus, a component whose version changes is not asked (it restarts and reads the new
        configuration at start), nor is one whose configuration stays the same.
        """
        proposals = {}
        for name, change in update.changes.items():
            record = self.components[name]
            if change.configuration != record.configuration and record.running():
                channel = record.validation
                if channel.subscribed():
                    proposals[name] = (channel, change.configuration)
        validation.validate(
            proposals,
            deployment_id=deployment_id,
            timeout_s=timeout_s,
            running=lambda name: self.components[name].running(),
        )

    @staticmethod
    def _lifecycle_text(
        plan: ComponentPlan, context: RecipeContext
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The Install and Run steps as they would run with ``context``'s configuration (interpolated)."""

        def step_text(step: Step | None) -> tuple[str, ...]:
            if step is None:
                return ()
            env = tuple(f"{k}={interpolate(v, context)}" for k, v in sorted(step.setenv.items()))
            skipif = interpolate(step.skipif, context) if step.skipif else ""
            return (interpolate(step.script, context), skipif, *env)

        common = tuple(f"{k}={interpolate(v, context)}" for k, v in sorted(plan.setenv.items()))
        return (*common, *step_text(plan.install)), (*common, *step_text(plan.run))

    def _decide(
        self, name: str, merge: dict[str, object], plan: ComponentPlan, restarting: set[str]
    ) -> _Change | None:
        """How an installed component of unchanged version takes the new deployment (None: untouched)."""
        record = self.components[name]
        # The nucleus restarts a component when a HARD dependency restarts; a SOFT one leaves it running.
        hard = [d.name for d in plan.dependencies if d.hard and d.name in restarting]
        if merge == record.merge and not hard:
            return None
        configuration = record.configuration
        if merge != record.merge:
            configuration = self._merged(record.configuration, merge, record.context)
        install_before, run_before = self._lifecycle_text(record.plan, record.context)
        install_after, run_after = self._lifecycle_text(
            record.plan, replace(record.context, configuration=configuration)
        )
        # The nucleus restarts a component whose interpolated lifecycle changed (AWS-FACTS §2.9).
        scripts_changed = (install_before, run_before) != (install_after, run_after)
        return _Change(
            name=name,
            configuration=configuration,
            merge=dict(merge),
            restart=bool(hard) or scripts_changed,
            reinstall=install_before != install_after,
        )

    def _prepare(self, wanted: Wanted) -> _UpdatePlan:
        """Recipes, dependency check, every artifact and every decision, before anything stops."""
        plans: dict[str, ComponentPlan] = {}
        for name, (version, _merge) in wanted.items():
            current = self.components.get(name)
            if current is not None and current.plan.version == version:
                plans[name] = current.plan
            else:
                plans[name] = plan_component(self._control.recipe(name, version), self._platform)
        order = dependency_order(plans)
        new_versions = {
            name
            for name, plan in plans.items()
            if name not in self.components or self.components[name].plan.version != plan.version
        }
        for name in order:
            if name in new_versions:
                self._fetch(plans[name])
        restarting = set(new_versions)
        changes: dict[str, _Change] = {}
        for name in order:
            if name in new_versions:
                continue
            change = self._decide(name, wanted[name][1], plans[name], restarting)
            if change is not None:
                changes[name] = change
                if change.restart:
                    restarting.add(name)
        return _UpdatePlan(
            plans=plans,
            order=order,
            new_versions=frozenset(new_versions),
            changes=changes,
            stopping=frozenset(restarting),
            removed=tuple(name for name in self.components if name not in wanted),
        )

    def _apply(
        self, deployment_ids: tuple[str, ...], wanted: Wanted, validation_timeout_s: float
    ) -> DeploymentUpdate:
        update = self._prepare(wanted)
        # The newest id names the proposal: the device applies its new deployments as one.
        self._validate(deployment_ids[-1], update, validation_timeout_s)
        # What stops, stops first (dependents before dependencies); then everything in dependency order.
        for name in reversed(list(self.components)):
            if name in update.removed or name in update.stopping:
                self._stop_one(self.components[name])
        for name in update.removed:
            del self.components[name]
        installed: list[str] = []
        reconfigured: list[str] = []
        restarted: list[str] = []
        for name in update.order:
            if name in update.new_versions:
                record = self._install_record(update.plans[name], wanted[name][1])
                self.components[name] = record
                self._install(record)
                self._start(record)
                installed.append(name)
            elif name in update.changes:
                change = update.changes[name]
                record = self.components[name]
                record.configuration = change.configuration
                record.context = replace(record.context, configuration=change.configuration)
                record.merge = change.merge
                # Written before a restart too: the new process reads the new configuration.
                self._write_config(record)
                if not change.restart:
                    reconfigured.append(name)
                    continue
                if change.reinstall:
                    self._install(record)
                self._start(record)
                restarted.append(name)
        return DeploymentUpdate(
            deployment_ids=deployment_ids,
            installed=tuple(installed),
            reconfigured=tuple(reconfigured),
            restarted=tuple(restarted),
            removed=update.removed,
            components={n: c.state for n, c in self.components.items()},
        )

    def stdout(self, component: str) -> str:
        return self.components[component].logs.stdout.read_text(encoding="utf-8")

    def __enter__(self) -> DeviceRunner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
