"""Errors raised by the ingest function. The handler is the only place that catches them."""

from __future__ import annotations


class IngestError(Exception):
    """Base class for every error the ingest function raises on purpose."""


class ConfigError(IngestError):
    """The function's environment is missing or malformed."""


class BadEventError(IngestError):
    """The message is malformed or not allowed (wrong schema, fields, sizes, or another device's name).

    Retrying cannot help; nothing has been written when it is raised.
    """


class IngestRetryableError(IngestError):
    """A transient AWS failure (throttling, transaction conflict): the same event succeeds on a retry.

    Every step is idempotent, so re-running the whole invocation is safe.
    """


class AckPublishError(IngestError):
    """A delivery acknowledgement could not be published (throttling, an IoT error, no endpoint).

    Never fails an invocation: the event is stored, and the device resends it when no ack comes
    (``lambdas.ingest.acks``).
    """
