"""Errors raised by the model lifecycle. Handlers and the CLI are the only places that catch them."""

from __future__ import annotations

from collections.abc import Sequence


class LifecycleError(Exception):
    """Base class for every error the lifecycle raises on purpose."""


class ConfigError(LifecycleError):
    """The environment is missing or malformed."""


class RefusedError(LifecycleError):
    """A command was refused on purpose (the CLI's exit code 1); nothing was changed."""

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


class PromotionRefusedError(RefusedError):
    """The canary is not (yet) healthy, or there is nothing to promote."""


class NotPromotableError(PromotionRefusedError):
    """The canary's model or deployment can never be promoted as it stands, however long the canary runs:
    the model's status (rolled back, superseded, rejected) or a canary deployment without the inference
    component. Only a new publish or a person changes it."""


class GroupOverlapError(PromotionRefusedError):
    """Devices are in both the canary and the fleet group: their two deployments pin different model
    versions, which Greengrass cannot resolve, so the canary's health says nothing about the model."""


class RollbackRefusedError(RefusedError):
    """There is no recorded model to roll back to."""


class NotFoundError(RefusedError):
    """The registry has no record of the model, component version or target asked about."""


class RegistryError(LifecycleError):
    """The lineage registry refused a read or write."""


class ConcurrentChangeError(RegistryError):
    """A model's status changed between reading and recording it: another writer got there first."""


class RetryableError(LifecycleError):
    """A throttled or transiently failing AWS call; run the same command or invocation again."""


class LockHeldError(RetryableError):
    """Another promote, rollback or publish holds the lifecycle lock; nothing was changed."""
