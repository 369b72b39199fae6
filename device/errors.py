"""The device runner's errors: one base, so a CLI boundary can catch them all."""

from __future__ import annotations


class DeviceError(RuntimeError):
    """The device could not resolve, fetch, install or run its deployment."""


class UnsupportedRecipeError(DeviceError):
    """The recipe uses a feature this local runner does not implement (refused, never ignored)."""


class InterpolationError(DeviceError):
    """A recipe variable could not be resolved."""


class LifecycleError(DeviceError):
    """A lifecycle step failed (non-zero exit or timeout)."""


class ConfigurationValidationError(DeviceError):
    """A running component rejected the deployment's new configuration, or did not answer in time."""


class ComponentVersionConflictError(DeviceError):
    """Two of the device's targets (thing groups, or the thing itself) pin different versions of one
    component; a nucleus cannot resolve that and fails the deployment (NoAvailableComponentVersion)."""
