"""HTTP front of the fake: the Greengrass v2 rest-json API, plus a small `/_fake/` admin API.

The admin API exposes the device-side helpers (register a core device, report a deployment's status,
declare thing-group members) to a device runner in another process; see `admin.FakeAdminClient`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from standins.greengrass_fake.errors import GreengrassFakeError, UnknownOperationError, ValidationError
from standins.greengrass_fake.protocol import (
    Route,
    WireResponse,
    build_routes,
    encode_error,
    encode_result,
    parse_request,
    to_wire,
)
from standins.greengrass_fake.state import GreengrassV2Fake, InstalledComponentReport

LOGGER = logging.getLogger("standins.greengrass_fake")
ADMIN_PREFIX = "/_fake/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client connection must not keep the process alive on shutdown

    def __init__(self, address: tuple[str, int], fake: GreengrassV2Fake) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self.routes: list[Route] = build_routes(fake.service_model)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle plus delayed ACK adds 40 ms a call.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        LOGGER.debug(format, *args)

    def _dispatch(self) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        operation = "admin" if url.path.startswith(ADMIN_PREFIX) else "unrouted"
        try:
            if url.path.startswith(ADMIN_PREFIX):
                response = _admin(self.server.fake, self.command, url.path[len(ADMIN_PREFIX) :], body)
            else:
                request = parse_request(
                    self.server.routes,
                    method=self.command,
                    raw_path=url.path,
                    query=url.query,
                    headers=dict(self.headers.items()),
                    body=body,
                )
                operation = request.operation
                result = self.server.fake.handle(request.operation, request.params)
                response = encode_result(self.server.fake.operation_model(request.operation), result)
        except GreengrassFakeError as exc:
            response = encode_error(exc)
            log_level = logging.ERROR if exc.status >= 500 else logging.INFO
            LOGGER.log(log_level, "request failed", extra={"operation": operation, "error": exc.code})
        except Exception:  # a bug in the fake must still answer, or the client hangs until timeout
            LOGGER.exception("fake crashed", extra={"operation": operation})
            response = encode_error(GreengrassFakeError("Internal error in the Greengrass v2 fake"))
        self._send(response)
        LOGGER.info(
            "request",
            extra={
                "operation": operation,
                "method": self.command,
                "path": url.path,
                "status": response.status,
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
            },
        )

    def _send(self, response: WireResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise ValidationError(f"Request body is not valid JSON: {exc}", reason="CANNOT_PARSE") from exc
    if not isinstance(document, dict):
        raise ValidationError("Request body must be a JSON object", reason="CANNOT_PARSE")
    return document


def _text(document: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(f"'{key}' must be a non-empty string")
    return value


def _installed(items: Any) -> list[InstalledComponentReport]:
    if not isinstance(items, list):
        raise ValidationError("'installedComponents' must be a list")
    reports = []
    for item in items:
        if not isinstance(item, dict):
            raise ValidationError("each installed component must be an object")
        is_root = item.get("isRoot", True)
        codes = item.get("lifecycleStatusCodes", [])
        if not isinstance(is_root, bool) or not isinstance(codes, list):
            raise ValidationError("'isRoot' must be a boolean and 'lifecycleStatusCodes' a list")
        reports.append(
            InstalledComponentReport(
                name=str(_text(item, "componentName")),
                version=str(_text(item, "componentVersion")),
                lifecycle_state=str(_text(item, "lifecycleState")),
                is_root=is_root,
                details=_text(item, "lifecycleStateDetails", required=False),
                status_codes=tuple(str(c) for c in codes),
            )
        )
    return reports


def _admin(fake: GreengrassV2Fake, method: str, path: str, body: bytes) -> WireResponse:
    """Device-side endpoints; paths are relative to `/_fake/`."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    ok = WireResponse(200, {"Content-Type": "application/json"}, b"{}")
    match method, parts:
        case "POST", ["core-devices"]:
            doc = _json_body(body)
            optional = {
                key: value
                for key, value in (
                    ("core_version", _text(doc, "coreVersion", required=False)),
                    ("platform", _text(doc, "platform", required=False)),
                    ("architecture", _text(doc, "architecture", required=False)),
                    ("runtime", _text(doc, "runtime", required=False)),
                )
                if value is not None
            }
            tags = doc.get("tags")
            if tags is not None and not (
                isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
            ):
                raise ValidationError("'tags' must be an object of strings")
            fake.register_core_device(str(_text(doc, "thingName")), tags=tags, **optional)
            return ok
        case "PUT", ["thing-groups", group]:
            things = _json_body(body).get("things")
            if not isinstance(things, list) or not all(isinstance(t, str) for t in things):
                raise ValidationError("'things' must be a list of thing names")
            fake.set_thing_group_members(group, things)
            return ok
        case "POST", ["core-devices", thing, "deployment-status"]:
            doc = _json_body(body)
            installed = doc.get("installedComponents")
            fake.report_device_status(
                thing,
                str(_text(doc, "deploymentId")),
                str(_text(doc, "status")),
                None if installed is None else _installed(installed),
                reason=_text(doc, "reason", required=False),
                error_stack=[str(e) for e in doc.get("errorStack", [])],
                error_types=[str(e) for e in doc.get("errorTypes", [])],
            )
            return ok
        case "POST", ["core-devices", thing, "installed-components"]:
            fake.report_installed_components(thing, _installed(_json_body(body).get("installedComponents")))
            return ok
        case "GET", ["core-devices", thing, "desired-deployments"]:
            views = [to_wire(asdict(v)) for v in fake.desired_deployments(thing)]
            payload = json.dumps({"deployments": views}).encode("utf-8")
            return WireResponse(200, {"Content-Type": "application/json"}, payload)
        case "GET", ["components", name, "versions", version, "recipe"]:
            payload = json.dumps(fake.recipe(name, version)).encode("utf-8")
            return WireResponse(200, {"Content-Type": "application/json"}, payload)
    raise UnknownOperationError(f"No admin endpoint {method} {ADMIN_PREFIX}{path}")


class RunningFake:
    """A fake served on a background thread; use as a context manager or call `stop()`."""

    def __init__(self, fake: GreengrassV2Fake, host: str, port: int) -> None:
        self.fake = fake
        self._server = _Server((host, port), fake)
        bound_host, bound_port = self._server.server_address[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="greengrass-fake",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> RunningFake:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(fake: GreengrassV2Fake | None = None, host: str = "127.0.0.1", port: int = 0) -> RunningFake:
    """Start serving `fake` (a fresh one if not given); port 0 picks a free port."""
    return RunningFake(fake or GreengrassV2Fake(), host, port)
