"""Canary health: is every canary device running the new model, and is it behaving like the old one?

Greengrass reports installation and process health per device (``list_effective_deployments``,
``list_installed_components``); it knows nothing about model quality. When heartbeats are available (the
ingest table), the anomaly rate under the new model is compared with the same device's rate under the
previous model: same sensor, same physics, so a large jump is the model's doing.

A device is ``healthy``, ``pending`` (not done yet: wait) or ``failed`` (will not get better by waiting:
roll back). Pure functions over plain values; the adapters gather the inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

from lambdas.lifecycle.errors import ConfigError

SUCCEEDED = frozenset({"SUCCEEDED", "COMPLETED"})
FAILED = frozenset({"FAILED", "REJECTED", "TIMED_OUT", "CANCELED"})
BROKEN_STATES = frozenset({"ERRORED", "BROKEN"})
WINDOWS_COUNTER = "windows_scored"
ANOMALIES_COUNTER = "anomalous_windows"


class HealthState(StrEnum):
    HEALTHY = "healthy"
    PENDING = "pending"
    FAILED = "failed"


@dataclass(frozen=True)
class EffectiveDeployment:
    deployment_id: str
    target_arn: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class InstalledComponent:
    name: str
    version: str
    lifecycle_state: str
    details: str = ""


@dataclass(frozen=True)
class DeviceReport:
    """What Greengrass knows about one core device; ``registered=False`` if it never reported."""

    thing_name: str
    registered: bool
    effective: tuple[EffectiveDeployment, ...] = ()
    installed: tuple[InstalledComponent, ...] = ()

    def component(self, name: str) -> InstalledComponent | None:
        return next((c for c in self.installed if c.name == name), None)

    def effective_for(self, target_arn: str) -> EffectiveDeployment | None:
        return next((e for e in self.effective if e.target_arn == target_arn), None)


@dataclass(frozen=True)
class HeartbeatSample:
    """One heartbeat's model and cumulative counters (since the detector process started)."""

    timestamp: str
    model_version: str | None
    windows_scored: float
    # None: the heartbeat has no such counter (an inference component from before it was sent).
    anomalous_windows: float | None


@dataclass(frozen=True)
class HealthPolicy:
    # The new model's anomaly rate may be at most ratio * baseline + slack.
    max_rate_ratio: float = 3.0
    rate_slack: float = 0.005
    # Windows the new model must have scored on a device before its rate counts as evidence.
    min_windows: int = 100
    # Used when a device has no heartbeats under the previous model to compare with.
    max_rate_without_baseline: float = 0.05

    @classmethod
    def parse(cls, text: str) -> HealthPolicy:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"health policy is not JSON: {exc}") from exc
        known = {"max_rate_ratio", "rate_slack", "min_windows", "max_rate_without_baseline"}
        if not isinstance(raw, dict) or set(raw) - known:
            raise ConfigError(f"health policy must be an object with keys from {sorted(known)}")
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"health policy {key} must be a number, got {value!r}")
            if value < 0:
                raise ConfigError(f"health policy {key} must be >= 0, got {value!r}")
        policy = cls(**raw)
        return cls(**{**asdict(policy), "min_windows": int(policy.min_windows)})


@dataclass(frozen=True)
class ExpectedRollout:
    """What a canary device should be running."""

    target_arn: str
    deployment_id: str
    model_component: str
    model_component_version: str
    inference_component: str
    model_version: str
    baseline_model_version: str | None


@dataclass(frozen=True)
class DeviceHealth:
    thing_name: str
    state: HealthState
    reasons: tuple[str, ...]
    anomaly_rate: float | None = None
    baseline_rate: float | None = None
    # The device has finished the deployment judged (succeeded or failed). Until then, what it reports
    # (a broken component, say) is left from the deployment before, or in flux.
    deployed: bool = False
    # Its heartbeats under the new model carry no anomaly counter: the rate check cannot run, and the
    # device stays pending until a person decides (see ``CanaryHealth.rate_unjudged``).
    rate_unjudged: bool = False

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data


@dataclass(frozen=True)
class CanaryHealth:
    target_arn: str
    deployment_id: str
    model_version: str
    devices: tuple[DeviceHealth, ...]

    @property
    def state(self) -> HealthState:
        if not self.devices or any(d.state is HealthState.PENDING for d in self.devices):
            state = HealthState.PENDING
        else:
            state = HealthState.HEALTHY
        if any(d.state is HealthState.FAILED for d in self.devices):
            state = HealthState.FAILED
        return state

    @property
    def rate_unjudged(self) -> bool:
        """Some device cannot be judged on its anomaly rate (an inference component too old to count its
        anomalous windows): waiting never changes that, so the canary is never promoted by itself."""
        return any(d.rate_unjudged for d in self.devices)

    @property
    def failed_when_deployed(self) -> bool:
        """Failed by a device that has finished this deployment: the deployment's own failure, not one
        left from the deployment it replaces (a component still broken while the device updates)."""
        return any(d.state is HealthState.FAILED and d.deployed for d in self.devices)

    @property
    def reasons(self) -> tuple[str, ...]:
        if not self.devices:
            return (f"the canary group {self.target_arn} has no devices",)
        return tuple(
            f"{d.thing_name}: {reason}"
            for d in self.devices
            if d.state is not HealthState.HEALTHY
            for reason in d.reasons
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "target_arn": self.target_arn,
            "deployment_id": self.deployment_id,
            "model_version": self.model_version,
            "state": str(self.state),
            "reasons": list(self.reasons),
            "devices": [d.to_dict() for d in self.devices],
        }


def assess_device(
    report: DeviceReport,
    expected: ExpectedRollout,
    *,
    heartbeats: Sequence[HeartbeatSample] | None,
    policy: HealthPolicy,
) -> DeviceHealth:
    """Judge one canary device; ``heartbeats`` None means no heartbeat source is configured."""
    name = report.thing_name
    if not report.registered:
        return DeviceHealth(name, HealthState.PENDING, ("is not a registered Greengrass core device yet",))
    failed: list[str] = []
    pending: list[str] = []
    effective = report.effective_for(expected.target_arn)
    deployed = (
        effective is not None
        and effective.deployment_id == expected.deployment_id
        and effective.status in SUCCEEDED | FAILED
    )
    _check_execution(report, expected, failed, pending)
    _check_components(report, expected, failed, pending)
    rate: float | None = None
    baseline: float | None = None
    unjudged = False
    if heartbeats is not None and not failed and not pending:
        unjudged = not _counts_anomalies(heartbeats, expected.model_version)
        if unjudged:
            # Counting them as 0 would pass any model: the rate stays unjudged, and promotion waits.
            pending.append(
                f"heartbeats under model {expected.model_version} carry no {ANOMALIES_COUNTER!r} counter "
                "(an inference component too old to send it); its anomaly rate cannot be judged"
            )
        else:
            rate, baseline = _check_anomaly_rate(heartbeats, expected, policy, failed, pending)
    if failed:
        return DeviceHealth(name, HealthState.FAILED, tuple(failed + pending), rate, baseline, deployed)
    if pending:
        return DeviceHealth(
            name, HealthState.PENDING, tuple(pending), rate, baseline, deployed, rate_unjudged=unjudged
        )
    return DeviceHealth(name, HealthState.HEALTHY, (), rate, baseline, deployed)


def _check_execution(
    report: DeviceReport, expected: ExpectedRollout, failed: list[str], pending: list[str]
) -> None:
    effective = report.effective_for(expected.target_arn)
    if effective is None:
        pending.append(f"has no deployment from {expected.target_arn} yet")
    elif effective.deployment_id != expected.deployment_id:
        pending.append(
            f"runs deployment {effective.deployment_id} ({effective.status}), "
            f"not the canary deployment {expected.deployment_id}"
        )
    elif effective.status in FAILED:
        detail = f": {effective.reason}" if effective.reason else ""
        failed.append(f"deployment {effective.deployment_id} is {effective.status}{detail}")
    elif effective.status not in SUCCEEDED:
        pending.append(f"deployment {effective.deployment_id} is {effective.status}")


def _check_components(
    report: DeviceReport, expected: ExpectedRollout, failed: list[str], pending: list[str]
) -> None:
    # Only the model and the inference component are the rollout's: another component broken on the
    # device (a sensor driver, a vendor agent) is not the model's doing, and rolling the model back
    # would not mend it. A deployment such a component fails shows as a failed execution instead.
    for name in (expected.model_component, expected.inference_component):
        component = report.component(name)
        if component is not None and component.lifecycle_state in BROKEN_STATES:
            detail = f" ({component.details})" if component.details else ""
            failed.append(f"{component.name} {component.version} is {component.lifecycle_state}{detail}")
    model = report.component(expected.model_component)
    if model is None:
        pending.append(f"{expected.model_component} is not installed")
    elif model.version != expected.model_component_version:
        pending.append(
            f"{expected.model_component} is at {model.version}, expected {expected.model_component_version}"
        )
    inference = report.component(expected.inference_component)
    if inference is None:
        pending.append(f"{expected.inference_component} is not installed")
    elif inference.lifecycle_state not in BROKEN_STATES and inference.lifecycle_state != "RUNNING":
        pending.append(f"{expected.inference_component} is {inference.lifecycle_state}, not RUNNING")


def _check_anomaly_rate(
    heartbeats: Sequence[HeartbeatSample],
    expected: ExpectedRollout,
    policy: HealthPolicy,
    failed: list[str],
    pending: list[str],
) -> tuple[float | None, float | None]:
    anomalies, windows = model_counts(heartbeats, expected.model_version)
    if windows < policy.min_windows:
        pending.append(
            f"has scored {windows:g} windows with model {expected.model_version}; "
            f"{policy.min_windows} are needed to judge its anomaly rate"
        )
        return None, None
    rate = anomalies / windows
    baseline: float | None = None
    if expected.baseline_model_version is not None and _counts_anomalies(
        heartbeats, expected.baseline_model_version
    ):
        old_anomalies, old_windows = model_counts(heartbeats, expected.baseline_model_version)
        if old_windows >= policy.min_windows:
            baseline = old_anomalies / old_windows
    if baseline is None:
        bound = policy.max_rate_without_baseline
        against = "the cap used without a baseline"
    else:
        bound = baseline * policy.max_rate_ratio + policy.rate_slack
        against = f"{policy.max_rate_ratio:g} * the previous model's {baseline:.4g} + {policy.rate_slack:g}"
    if rate > bound:
        failed.append(f"anomaly rate {rate:.4g} exceeds {bound:.4g} ({against})")
    return rate, baseline


def _counts_anomalies(heartbeats: Sequence[HeartbeatSample], model_version: str) -> bool:
    """Whether the model's newest heartbeat carries the anomaly counter. Older ones without it (before the
    component was updated) do not matter: ``model_counts`` starts afresh where the counter appears, and
    the usual ``min_windows`` decides when enough has been counted since."""
    beats = sorted((h for h in heartbeats if h.model_version == model_version), key=lambda h: h.timestamp)
    return not beats or beats[-1].anomalous_windows is not None


def model_counts(heartbeats: Sequence[HeartbeatSample], model_version: str) -> tuple[float, float]:
    """(anomalous windows, windows scored) attributable to ``model_version``.

    Counters are cumulative per process and survive a model hot-swap, so each interval between
    consecutive heartbeats is attributed to the model the later heartbeat reports; a counter that went
    down means the process restarted, and then the later value is the whole interval. The oldest
    heartbeat only sets the starting point.
    """
    ordered = sorted(heartbeats, key=lambda h: h.timestamp)
    anomalies = windows = 0.0
    previous: HeartbeatSample | None = None
    for beat in ordered:
        if beat.model_version == model_version:
            if previous is None or beat.anomalous_windows is None or previous.anomalous_windows is None:
                # The oldest heartbeat read may be mid-run (its totals include unknown history), and a
                # heartbeat without the anomaly counter gives no difference to take: a fresh start point.
                d_windows = d_anomalies = 0.0
            elif beat.windows_scored < previous.windows_scored:
                d_windows, d_anomalies = beat.windows_scored, beat.anomalous_windows
            else:
                d_windows = beat.windows_scored - previous.windows_scored
                d_anomalies = max(0.0, beat.anomalous_windows - previous.anomalous_windows)
            windows += d_windows
            anomalies += d_anomalies
        previous = beat
    return anomalies, windows
