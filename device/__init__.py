"""A local stand-in for a Greengrass core device (the nucleus's part in running our components).

It resolves the device's deployments from the Greengrass v2 control plane (our fake or real AWS), fetches
recipes and artifacts, interpolates recipe variables and runs each component's lifecycle as real
subprocesses. What it does not support is refused with :class:`UnsupportedRecipeError`, never ignored.
"""

from .errors import (
    ComponentVersionConflictError,
    ConfigurationValidationError,
    DeviceError,
    InterpolationError,
    LifecycleError,
    UnsupportedRecipeError,
)

__all__ = [
    "ComponentVersionConflictError",
    "ConfigurationValidationError",
    "DeviceError",
    "InterpolationError",
    "LifecycleError",
    "UnsupportedRecipeError",
]
