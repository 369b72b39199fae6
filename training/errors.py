"""Errors raised by the training cores and caught once, in ``training.train.main``."""


class TrainingError(Exception):
    """Base class: every failure the training job can explain to its caller."""


class ConfigError(TrainingError):
    """A hyperparameter or path is invalid (bad value, contradictory options, missing input)."""


class DataError(TrainingError):
    """The training data cannot be used as given."""


class EmptyDataError(DataError):
    """No CSV files, or files without any data rows."""


class MissingTimestampError(DataError):
    """No column of a CSV looks like a timestamp."""


class InvalidTimestampError(DataError):
    """A value in the timestamp column is not a timestamp."""


class MissingChannelError(DataError):
    """A requested channel is not a column of the CSV, or a CSV has no numeric channel at all."""


class ChannelMismatchError(DataError):
    """Files of one training channel do not have the same sensor channels."""


class NonNumericValueError(DataError):
    """A sensor cell is neither a number nor empty (missing)."""


class AllMissingChannelError(DataError):
    """A sensor channel has no value at all (every cell empty or NaN)."""


class TooFewRowsError(DataError):
    """Not enough rows to build the windows the detector needs."""


class MalformedCsvError(DataError):
    """A CSV row does not have as many fields as the header."""


class CalibrationError(TrainingError):
    """The training windows' scores cannot give a threshold (not finite: the data's scale is degenerate)."""
