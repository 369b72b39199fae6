"""One base error for the component; cores raise these, entry points and callbacks catch them."""


class AnomalyDetectorError(Exception):
    """Base class for every error this component raises on purpose."""


class ModelError(AnomalyDetectorError):
    """The model file is unreadable, corrupt, or does not follow the model contract."""


class MessageError(AnomalyDetectorError):
    """A sensor message is malformed; ``kind`` is a short stable label used as a counter key."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(AnomalyDetectorError):
    """The component configuration (CLI, environment or Greengrass configuration) is invalid."""


class TransportError(AnomalyDetectorError):
    """Publishing to the cloud side failed or was not acknowledged in time."""


class SourceError(AnomalyDetectorError):
    """A sensor source could not be opened or read."""


class SpoolError(AnomalyDetectorError):
    """The durable event spool cannot be opened, read or written."""


class AckError(AnomalyDetectorError):
    """An acknowledgement from the cloud does not follow the contract; ``kind`` labels it in the log."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
