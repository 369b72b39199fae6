"""Errors the fake raises; each maps onto one modeled Greengrass v2 error shape.

The HTTP layer turns a `GreengrassFakeError` into the AWS rest-json error format (`x-amzn-ErrorType`
header plus a JSON body), so botocore raises the same `ClientError` codes as against real AWS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One failed field check, as in the `ValidationExceptionField` shape."""

    name: str
    message: str


class GreengrassFakeError(Exception):
    """Base error: an AWS error code, HTTP status and the modeled body members."""

    code = "InternalServerException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        return {"message": self.message}


class ValidationError(GreengrassFakeError):
    code = "ValidationException"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        reason: str = "FIELD_VALIDATION_FAILED",
        fields: tuple[FieldError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.fields = fields

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message, "reason": self.reason}
        if self.fields:
            body["fields"] = [{"name": f.name, "message": f.message} for f in self.fields]
        return body

    @classmethod
    def from_fields(cls, fields: list[FieldError]) -> ValidationError:
        # Same wording as Smithy-generated AWS services, so logs read like the real thing.
        noun = "error" if len(fields) == 1 else "errors"
        detail = "; ".join(f.message for f in fields)
        return cls(f"{len(fields)} validation {noun} detected: {detail}", fields=tuple(fields))


class _ResourceError(GreengrassFakeError):
    def __init__(self, message: str, *, resource_id: str, resource_type: str) -> None:
        super().__init__(message)
        self.resource_id = resource_id
        self.resource_type = resource_type

    def body(self) -> dict[str, object]:
        return {"message": self.message, "resourceId": self.resource_id, "resourceType": self.resource_type}


class ResourceNotFoundError(_ResourceError):
    code = "ResourceNotFoundException"
    status = 404


class ConflictError(_ResourceError):
    code = "ConflictException"
    status = 409


class UnknownOperationError(GreengrassFakeError):
    """No operation in the service model matches the request's method and path."""

    code = "UnknownOperationException"
    status = 404


class NotImplementedByFakeError(GreengrassFakeError):
    """The operation exists in the service model but this fake does not implement it.

    501 is outside botocore's retry set, so callers fail at once instead of retrying.
    """

    code = "NotImplementedByFake"
    status = 501


class ContractViolationError(GreengrassFakeError):
    """The fake was about to return something the service model forbids: a bug in the fake."""

    code = "InternalServerException"
    status = 500
