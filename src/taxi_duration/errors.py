"""Typed user-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class TaxiDurationError(Exception):
    """An error caused by the user's input or setup, reported as one line."""

    exit_code = 2


class UnknownFormatError(TaxiDurationError):
    """A file whose columns match no known trip format."""


class UnreadableInputError(TaxiDurationError):
    """A file or folder that does not exist or cannot be read."""


class ConfigError(TaxiDurationError):
    """Invalid settings or pipeline parameters."""


class NoDataError(TaxiDurationError):
    """A stage found nothing to work on (e.g. train before ingest)."""


class ModelNotFoundError(TaxiDurationError):
    """No registered model (or alias) to score with."""


class BenchmarkError(TaxiDurationError):
    """An engine of the comparison benchmark failed (other than running out of memory), or the engines computed
    different results from the same data."""

    exit_code = 3
