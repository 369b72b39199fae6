"""Errors raised by the publisher. The handler is the only place that catches them."""

from __future__ import annotations


class PublisherError(Exception):
    """Base class for every error the publisher raises on purpose."""


class ConfigError(PublisherError):
    """The function's environment is missing or malformed."""


class BadEventError(PublisherError):
    """The invocation event is not one the publisher acts on (wrong source, bucket, key or status)."""


class ModelNotFoundError(PublisherError):
    """The model object named by the event does not exist in the model store."""


class ModelValidationError(PublisherError):
    """The model file breaks the model contract (docs/contracts.md §1) and is refused."""


class ArtifactConflictError(PublisherError):
    """A write-once key (``models/...`` or a component artifact under ``components/``) already holds
    different bytes; those keys are never overwritten."""


class GreengrassError(PublisherError):
    """Greengrass refused or failed a component version or deployment."""


class ComponentVersionConflictError(GreengrassError):
    """The component version already exists (Greengrass ``ConflictException``)."""


class RetryableError(PublisherError):
    """A throttled or transiently failing AWS call; the invocation should be retried as it is."""
