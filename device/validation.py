"""The deployment's configuration validation phase, played over files next to each configuration file.

A nucleus, before it applies a deployment's new configuration to a running component whose version does
not change, sends the proposed configuration to every such component that subscribed with
``SubscribeToValidateConfigurationUpdates`` and waits for each one's ``SendConfigurationValidityReport``.
A REJECTED report, or no report within the deployment's ``configurationValidationPolicy.timeoutInSeconds``,
fails the deployment with no state change (aws-greengrass-nucleus ``DynamicComponentConfigurationValidator``
and its tests; the API reference's "the deployment proceeds" on timeout is not what the nucleus does).

There is no IPC server here: the component's ``FileConfigIpc``
(``greengrass_components/anomaly_detector/local_config.py``) and this module meet in three files next to
the component's configuration file ``<name>.json``:

- ``<name>.validating``: the component subscribed (written by it, removed when it unsubscribes);
- ``<name>.proposed.json``: ``{"deploymentId", "configuration"}``, written here;
- ``<name>.validity.<deploymentId>.json`` (the id percent-encoded but for ``A-Za-z0-9_.-``):
  ``{"deploymentId", "status", "message"}``, written by the component.

Both sides write to a temporary name and rename, so neither reads half a document.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationValidationError

LOG = logging.getLogger("device.validation")

ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
# DeploymentConfigurationValidationPolicy.timeoutInSeconds when the deployment leaves it out.
DEFAULT_TIMEOUT_S = 30.0
POLL_S = 0.05
# The nucleus's wording (DynamicComponentConfigurationValidator), so a reason reads the same as on a device.
REJECTED_PREFIX = "Components reported that their to-be-deployed configuration is invalid"
NO_REPORT_PREFIX = "Error while waiting for validation report for one or more components:"


@dataclass(frozen=True)
class ValidityReport:
    status: str
    message: str


class ValidationChannel:
    """The runner's side of one component's validation files."""

    def __init__(self, config_file: Path) -> None:
        self._config_file = config_file
        self.marker = config_file.with_suffix(".validating")
        self.proposal = config_file.with_suffix(".proposed.json")

    def report_file(self, deployment_id: str) -> Path:
        # The component's side encodes the id the same way (local_config.validity_file).
        safe = re.sub(
            r"[^A-Za-z0-9_.-]", lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), deployment_id
        )
        return self._config_file.with_suffix(f".validity.{safe}.json")

    def subscribed(self) -> bool:
        return self.marker.exists()

    def reset(self) -> None:
        """Before a process starts: whatever an earlier process left says nothing about the new one."""
        self.marker.unlink(missing_ok=True)
        self.proposal.unlink(missing_ok=True)
        for stale in self._config_file.parent.glob(f"{self._config_file.stem}.validity.*.json"):
            stale.unlink(missing_ok=True)

    def propose(self, deployment_id: str, configuration: Mapping[str, object]) -> None:
        self.report_file(deployment_id).unlink(missing_ok=True)
        tmp = self.proposal.with_name(f"{self.proposal.name}.tmp")
        document = {"deploymentId": deployment_id, "configuration": configuration}
        tmp.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
        tmp.replace(self.proposal)

    def report(self, deployment_id: str) -> ValidityReport | None:
        """The component's answer to ``deployment_id``, or None while there is none."""
        try:
            document = json.loads(self.report_file(deployment_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Renamed into place, so never partial: an unreadable report is the component's fault.
            return ValidityReport(REJECTED, f"unreadable validity report: {exc}")
        status = document.get("status") if isinstance(document, dict) else None
        if status not in (ACCEPTED, REJECTED) or document.get("deploymentId") != deployment_id:
            return ValidityReport(REJECTED, f"malformed validity report: {document!r}")
        return ValidityReport(str(status), str(document.get("message") or ""))

    def discard(self, deployment_id: str) -> None:
        self.proposal.unlink(missing_ok=True)
        self.report_file(deployment_id).unlink(missing_ok=True)


def validate(
    proposals: Mapping[str, tuple[ValidationChannel, Mapping[str, object]]],
    *,
    deployment_id: str,
    timeout_s: float,
    running: Callable[[str], bool],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Propose every component's new configuration, wait for every report; raise if any is not ACCEPTED.

    ``proposals`` holds only subscribed components. ``running(name)`` says whether the component's process
    is still alive: one that exits before answering cannot answer, so the wait for it ends there (a
    nucleus would wait out the timeout and fail the same way).
    """
    if not proposals:
        return
    for channel, configuration in proposals.values():
        channel.propose(deployment_id, configuration)
    LOG.info(
        "configuration validation requested",
        extra={"deployment_id": deployment_id, "components": sorted(proposals), "timeout_s": timeout_s},
    )
    channels = {name: channel for name, (channel, _configuration) in proposals.items()}
    try:
        reports, missing = _wait(channels, deployment_id, clock() + timeout_s, running, clock)
    finally:
        for channel in channels.values():
            channel.discard(deployment_id)
    if missing:
        reasons = [
            f"{name} {why}" if why else f"{name} did not report within {timeout_s:g}s"
            for name, why in missing.items()
        ]
        raise ConfigurationValidationError(f"{NO_REPORT_PREFIX} {'; '.join(reasons)}")
    rejected = [
        f"{{ name = {n}, message = {r.message} }}" for n, r in reports.items() if r.status == REJECTED
    ]
    if rejected:
        raise ConfigurationValidationError(f"{REJECTED_PREFIX} {' '.join(rejected)}")
    LOG.info("configuration validation accepted", extra={"deployment_id": deployment_id})


def _wait(
    channels: Mapping[str, ValidationChannel],
    deployment_id: str,
    deadline: float,
    running: Callable[[str], bool],
    clock: Callable[[], float],
) -> tuple[dict[str, ValidityReport], dict[str, str]]:
    """Every report that arrives by ``deadline``; the rest as name -> why not ("" when out of time)."""
    reports: dict[str, ValidityReport] = {}
    missing: dict[str, str] = {}
    while True:
        for name, channel in channels.items():
            if name in reports or name in missing:
                continue
            report = channel.report(deployment_id)
            if report is not None:
                reports[name] = report
            elif not running(name):
                missing[name] = "exited before it reported"
        if len(reports) + len(missing) == len(channels):
            return reports, missing
        if clock() >= deadline:
            return reports, {**missing, **{n: "" for n in channels if n not in reports and n not in missing}}
        time.sleep(POLL_S)
