"""The CLI's own errors; errors of the parts it drives are mapped to exit codes in ``edgeml.cli``."""


class EdgemlError(Exception):
    """Base of the CLI's errors."""


class UsageError(EdgemlError):
    """Arguments or configuration that cannot work (exit code 2)."""


class RefusedError(EdgemlError):
    """The platform said no: a gate rejection, a refused model, a failed run (exit code 1)."""
