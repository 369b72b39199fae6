"""The rest-json wire protocol of Greengrass v2, read from botocore's service model.

Routing matches the raw (still percent-encoded) path segment by segment against each operation's
`requestUri`, then decodes each label: botocore percent-encodes `:` and `/` inside labels such as a
component ARN, so decoding the whole path first would split an ARN into several segments.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from standins.greengrass_fake.errors import (
    FieldError,
    GreengrassFakeError,
    UnknownOperationError,
    ValidationError,
)


@dataclass(frozen=True)
class _Segment:
    literal: str | None  # None for a label
    label: str = ""
    greedy: bool = False


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    segments: tuple[_Segment, ...]

    def match(self, method: str, raw_segments: list[str]) -> dict[str, str] | None:
        if method != self.method:
            return None
        labels: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.greedy:
                rest = raw_segments[index:]
                matched = bool(rest) and all(rest)
                labels[segment.label] = unquote("/".join(rest))
                return labels if matched else None
            raw = raw_segments[index] if index < len(raw_segments) else ""
            if not raw or (segment.literal is not None and raw != segment.literal):
                return None
            if segment.literal is None:
                labels[segment.label] = unquote(raw)
        return labels if len(raw_segments) == len(self.segments) else None


@dataclass(frozen=True)
class ParsedRequest:
    operation: str
    params: dict[str, Any]


def _split(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


def build_routes(model: ServiceModel) -> list[Route]:
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        template = operation.http["requestUri"].split("?", 1)[0]
        segments = []
        for part in _split(template):
            if part.startswith("{") and part.endswith("}"):
                label = part[1:-1]
                greedy = label.endswith("+")
                segments.append(_Segment(None, label.rstrip("+"), greedy))
            else:
                segments.append(_Segment(part))
        routes.append(Route(operation, operation.http["method"], tuple(segments)))
    # Literal segments before labels, so `/components/{arn}/metadata` never loses to a shorter route.
    routes.sort(key=lambda r: [0 if s.literal is not None else 1 for s in r.segments])
    return routes


def route(routes: list[Route], method: str, raw_path: str) -> tuple[OperationModel, dict[str, str]]:
    raw_segments = _split(raw_path)
    for candidate in routes:
        labels = candidate.match(method, raw_segments)
        if labels is not None:
            return candidate.operation, labels
    raise UnknownOperationError(f"No Greengrass v2 operation matches {method} {raw_path}")


def parse_request(
    routes: list[Route], *, method: str, raw_path: str, query: str, headers: Mapping[str, str], body: bytes
) -> ParsedRequest:
    """Rebuild the boto3-level parameters of a request; wrong types are left for the validator."""
    operation, labels = route(routes, method, raw_path)
    shape = operation.input_shape
    if shape is None:
        return ParsedRequest(operation.name, {})
    errors: list[FieldError] = []
    by_location: dict[tuple[str, str], tuple[str, Shape]] = {}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        if location:
            by_location[(location, member.serialization.get("name", name))] = (name, member)
    params: dict[str, Any] = {}
    for label, raw in labels.items():
        name, member = by_location[("uri", label)]
        params[name] = _from_text(raw, member, name, errors)
    params.update(_query_params(query, by_location, errors))
    lowered = {k.lower(): v for k, v in headers.items()}
    for (location, wire_name), (name, member) in by_location.items():
        if location == "header" and wire_name.lower() in lowered:
            params[name] = _from_text(lowered[wire_name.lower()], member, name, errors)
    params.update(_body_params(body, shape, errors))
    if errors:
        raise ValidationError.from_fields(errors)
    return ParsedRequest(operation.name, params)


def _query_params(
    query: str, by_location: Mapping[tuple[str, str], tuple[str, Shape]], errors: list[FieldError]
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        found = by_location.get(("querystring", key))
        if found is None:
            errors.append(FieldError(key, f"Unknown query parameter '{key}'"))
            continue
        name, member = found
        if isinstance(member, ListShape):
            params[name] = [_from_text(v, member.member, name, errors) for v in values]
        else:
            params[name] = _from_text(values[-1], member, name, errors)
    return params


def _body_params(body: bytes, shape: StructureShape, errors: list[FieldError]) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"Request body is not valid JSON: {exc}", reason="CANNOT_PARSE") from exc
    if not isinstance(document, dict):
        raise ValidationError("Request body must be a JSON object", reason="CANNOT_PARSE")
    body_members = {n: m for n, m in shape.members.items() if not m.serialization.get("location")}
    # Unknown or location-bound names stay as sent, so the validator names them.
    return {
        key: value if key not in body_members else _from_json(value, body_members[key], key, errors)
        for key, value in document.items()
    }


def _from_text(raw: str, shape: Shape, path: str, errors: list[FieldError]) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("double", "float"):
            return float(raw)
        if kind == "boolean":
            return {"true": True, "false": False}[raw]
        if kind == "timestamp":
            return _parse_timestamp_text(raw)
    except (ValueError, KeyError):
        errors.append(
            FieldError(path, f"Value '{raw}' at '{path}' failed to satisfy constraint: Member must be {kind}")
        )
        return raw
    return raw


def _parse_timestamp_text(raw: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(float(raw), tz=dt.UTC)
    except ValueError:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _from_json(value: Any, shape: Shape, path: str, errors: list[FieldError]) -> Any:
    """Undo the JSON encoding of blobs and timestamps; anything mistyped passes through unchanged."""
    converted: Any = value
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        converted = {
            key: item
            if key not in shape.members
            else _from_json(item, shape.members[key], f"{path}.{key}", errors)
            for key, item in value.items()
        }
    elif isinstance(shape, ListShape) and isinstance(value, list):
        converted = [
            _from_json(item, shape.member, f"{path}.{i + 1}", errors) for i, item in enumerate(value)
        ]
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        converted = {k: _from_json(v, shape.value, f"{path}.{k}", errors) for k, v in value.items()}
    elif shape.type_name == "blob" and isinstance(value, str):
        try:
            converted = base64.b64decode(value, validate=True)
        except binascii.Error:
            errors.append(
                FieldError(path, f"Value at '{path}' failed to satisfy constraint: Member must be base64")
            )
    elif shape.type_name == "timestamp" and not isinstance(value, bool) and isinstance(value, int | float):
        converted = dt.datetime.fromtimestamp(value, tz=dt.UTC)
    return converted


def to_wire(value: Any) -> Any:
    """rest-json body encoding: blobs as base64 text, timestamps as epoch seconds."""
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return value


@dataclass(frozen=True)
class WireResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def encode_result(operation: OperationModel, result: Mapping[str, Any]) -> WireResponse:
    status = int(operation.http.get("responseCode", 200))
    headers = {"Content-Type": "application/json"}
    if status == 204:
        return WireResponse(status, headers, b"")
    return WireResponse(status, headers, json.dumps(to_wire(dict(result))).encode("utf-8"))


def encode_error(error: GreengrassFakeError) -> WireResponse:
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": error.code}
    return WireResponse(error.status, headers, json.dumps(error.body()).encode("utf-8"))
