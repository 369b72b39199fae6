"""Checks values against botocore's `greengrassv2` service model.

`ShapeValidator` is stricter than botocore's client-side `ParamValidator`: besides required members and
types it checks unknown members, enums, lengths, ranges and patterns, which real AWS checks server-side.
The same walk validates the fake's own responses (in `output` mode blobs must be bytes and timestamps
datetimes, as botocore's parser would hand them to a caller).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, cast

from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from standins.greengrass_fake.errors import FieldError

Mode = Literal["input", "output"]

SERVICE_NAME = "greengrassv2"


def load_service_model() -> ServiceModel:
    """The installed botocore's model, so the fake moves with the SDK the project pins."""
    import botocore.session  # noqa: PLC0415 - a session is costly; build it only when a fake is made

    return botocore.session.get_session().get_service_model(SERVICE_NAME)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ShapeValidator:
    """Collects every violation in one pass, so one error message lists them all (as AWS does)."""

    def __init__(self, mode: Mode) -> None:
        self._mode = mode

    def validate(self, value: object, shape: StructureShape) -> list[FieldError]:
        errors: list[FieldError] = []
        self._structure(value, shape, "", errors)
        return errors

    def _check(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        handler = getattr(self, f"_{shape.type_name}", None)
        if handler is None:
            return  # document types and anything exotic: accept, as the model puts no limits on them
        handler(value, shape, path, errors)

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def _structure(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        shape = cast(StructureShape, shape)  # dispatched on type_name
        if not isinstance(value, Mapping):
            errors.append(_type_error(value, path or "input", "structure"))
            return
        for name in shape.required_members:
            if value.get(name) is None:
                where = self._join(path, name)
                errors.append(
                    FieldError(
                        where,
                        f"Value null at '{where}' failed to satisfy constraint: Member must not be null",
                    )
                )
        members = shape.members
        for name, member_value in value.items():
            where = self._join(path, str(name))
            if name not in members:
                allowed = ", ".join(members)
                errors.append(FieldError(where, f"Unknown parameter at '{where}', must be one of: {allowed}"))
                continue
            if member_value is None:
                continue
            self._check(member_value, members[name], where, errors)

    def _list(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        shape = cast(ListShape, shape)
        if not isinstance(value, list | tuple):
            errors.append(_type_error(value, path, "list"))
            return
        _length_checks(len(value), shape, path, errors, what="Member must have length")
        for index, item in enumerate(value):
            self._check(item, shape.member, f"{path}.{index + 1}", errors)

    def _map(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        shape = cast(MapShape, shape)
        if not isinstance(value, Mapping):
            errors.append(_type_error(value, path, "map"))
            return
        _length_checks(len(value), shape, path, errors, what="Member must have length")
        for key, item in value.items():
            self._check(key, shape.key, f"{path}.key", errors)
            if item is None:
                continue
            self._check(item, shape.value, f"{path}.{key}", errors)

    def _string(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        if not isinstance(value, str):
            errors.append(_type_error(value, path, "string"))
            return
        enum: list[str] = getattr(shape, "enum", None) or []
        if enum and value not in enum:
            errors.append(
                FieldError(
                    path,
                    f"Value {_show(value)} at '{path}' failed to satisfy constraint: "
                    f"Member must satisfy enum value set: [{', '.join(enum)}]",
                )
            )
        _length_checks(len(value), shape, path, errors, what="Member must have length", shown=value)
        pattern = shape.metadata.get("pattern")
        # Smithy patterns are not implicitly anchored: search, do not fullmatch.
        if pattern and not _compiled(pattern).search(value):
            errors.append(
                FieldError(
                    path,
                    f"Value {_show(value)} at '{path}' failed to satisfy constraint: "
                    f"Member must satisfy regular expression pattern: {pattern}",
                )
            )

    def _integer(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(_type_error(value, path, "integer"))
            return
        _range_checks(value, shape, path, errors)

    _long = _integer

    def _double(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(_type_error(value, path, "number"))
            return
        _range_checks(value, shape, path, errors)

    _float = _double

    def _boolean(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        if not isinstance(value, bool):
            errors.append(_type_error(value, path, "boolean"))

    def _blob(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        allowed: tuple[type, ...] = (bytes,) if self._mode == "output" else (bytes, bytearray, str)
        if not isinstance(value, allowed):
            errors.append(_type_error(value, path, "blob"))

    def _timestamp(self, value: object, shape: Shape, path: str, errors: list[FieldError]) -> None:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                errors.append(FieldError(path, f"Timestamp at '{path}' must be timezone-aware"))
            return
        if self._mode == "input" and not isinstance(value, bool) and isinstance(value, int | float):
            return
        errors.append(_type_error(value, path, "timestamp"))


def _type_error(value: object, path: str, expected: str) -> FieldError:
    return FieldError(
        path,
        f"Value {_show(value)} at '{path}' failed to satisfy constraint: Member must be of type {expected} "
        f"(got {type(value).__name__})",
    )


def _length_checks(
    length: int, shape: Shape, path: str, errors: list[FieldError], *, what: str, shown: object = None
) -> None:
    low = shape.metadata.get("min")
    high = shape.metadata.get("max")
    label = _show(shown) if shown is not None else "of length " + str(length)
    if low is not None and length < low:
        errors.append(
            FieldError(path, f"Value {label} at '{path}' failed to satisfy constraint: {what} >= {low}")
        )
    if high is not None and length > high:
        errors.append(
            FieldError(path, f"Value {label} at '{path}' failed to satisfy constraint: {what} <= {high}")
        )


def _range_checks(value: float, shape: Shape, path: str, errors: list[FieldError]) -> None:
    low = shape.metadata.get("min")
    high = shape.metadata.get("max")
    if low is not None and value < low:
        errors.append(
            FieldError(
                path, f"Value {value} at '{path}' failed to satisfy constraint: Member must be >= {low}"
            )
        )
    if high is not None and value > high:
        errors.append(
            FieldError(
                path, f"Value {value} at '{path}' failed to satisfy constraint: Member must be <= {high}"
            )
        )


def validate_input(operation: OperationModel, params: Mapping[str, Any]) -> list[FieldError]:
    shape = operation.input_shape
    if shape is None:
        return [FieldError(str(k), f"Unknown parameter at '{k}'") for k in params]
    return ShapeValidator("input").validate(params, shape)


def validate_output(operation: OperationModel, result: Mapping[str, Any]) -> list[FieldError]:
    shape = operation.output_shape
    if shape is None:
        return [FieldError(str(k), f"Operation has no output, but returned '{k}'") for k in result]
    return ShapeValidator("output").validate(result, shape)
