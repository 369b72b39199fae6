"""Errors raised by the retrain function. The handler is the only place that catches them."""

from __future__ import annotations


class RetrainError(Exception):
    """Base class for every error the retrain function raises on purpose."""


class ConfigError(RetrainError):
    """The function's environment is missing or malformed."""


class BadRequestError(RetrainError):
    """The queued message is not a CloudWatch alarm state change into ALARM; retrying cannot help."""


class NoTemplateJobError(RetrainError):
    """No completed training job to take the training code and image from."""


class ForeignTemplateError(RetrainError):
    """The newest completed job's code is outside this environment's model store; cloning it is refused."""


class RetrainRetryableError(RetrainError):
    """Throttling or a transient SageMaker failure: the same message succeeds on a later receive."""
