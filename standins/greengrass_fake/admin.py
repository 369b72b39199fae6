"""Client for the fake's `/_fake/` admin API, for a device runner in another process than the fake."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from standins.greengrass_fake.state import InstalledComponentReport


class AdminError(RuntimeError):
    """The fake refused an admin call; `code` is the AWS-style error code it returned."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


def _component(report: InstalledComponentReport) -> dict[str, Any]:
    item: dict[str, Any] = {
        "componentName": report.name,
        "componentVersion": report.version,
        "lifecycleState": report.lifecycle_state,
        "isRoot": report.is_root,
        "lifecycleStatusCodes": list(report.status_codes),
    }
    if report.details:
        item["lifecycleStateDetails"] = report.details
    return item


class FakeAdminClient:
    """Mirrors the device-side methods of `GreengrassV2Fake` over HTTP."""

    def __init__(self, endpoint_url: str, *, timeout: float = 10.0) -> None:
        if not endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must be http(s): {endpoint_url}")
        self._base = endpoint_url.rstrip("/") + "/_fake/"
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self._base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                result: dict[str, Any] = json.loads(response.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            raise AdminError(
                exc.code, exc.headers.get("x-amzn-ErrorType", "Unknown"), payload.get("message", "")
            ) from exc

    def register_core_device(self, thing_name: str, **attributes: str) -> None:
        """`attributes`: coreVersion, platform, architecture, runtime (wire names)."""
        self._call("POST", "core-devices", {"thingName": thing_name, **attributes})

    def set_thing_group_members(self, group_name: str, thing_names: Sequence[str]) -> None:
        self._call("PUT", f"thing-groups/{quote(group_name, safe='')}", {"things": list(thing_names)})

    def report_device_status(
        self,
        thing_name: str,
        deployment_id: str,
        status: str,
        installed_components: Sequence[InstalledComponentReport] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"deploymentId": deployment_id, "status": status}
        if installed_components is not None:
            body["installedComponents"] = [_component(c) for c in installed_components]
        if reason is not None:
            body["reason"] = reason
        self._call("POST", f"core-devices/{quote(thing_name, safe='')}/deployment-status", body)

    def report_installed_components(
        self, thing_name: str, installed_components: Sequence[InstalledComponentReport]
    ) -> None:
        body = {"installedComponents": [_component(c) for c in installed_components]}
        self._call("POST", f"core-devices/{quote(thing_name, safe='')}/installed-components", body)

    def desired_deployments(self, thing_name: str) -> list[dict[str, Any]]:
        """JSON form of `DeploymentView` (snake_case keys, `created` as epoch seconds)."""
        result = self._call("GET", f"core-devices/{quote(thing_name, safe='')}/desired-deployments")
        deployments: list[dict[str, Any]] = result["deployments"]
        return deployments

    def recipe(self, name: str, version: str) -> dict[str, Any]:
        return self._call(
            "GET", f"components/{quote(name, safe='')}/versions/{quote(version, safe='')}/recipe"
        )
