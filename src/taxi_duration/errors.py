"""Typed user-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""

from __future__ import annotations

import re


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


# C0 controls (except tab and newline), DEL and C1 controls: ESC starts terminal escape sequences, BEL rings,
# NUL and the C1 range (0x9b is a one-byte CSI) can also drive a terminal
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if code not in (0x09, 0x0A)}
_CONTROL[0x0A] = "\\n"  # a message stays one line


def terminal_safe(text: str) -> str:
    """`text` with control characters written as escapes (`\\x1b`), so bytes from a user's file shown in a
    message cannot clear the screen, set the terminal title or split the message over lines."""
    return text.translate(_CONTROL)


GRPC_STATUS = re.compile(r'status = StatusCode\.(\w+)\s+details = "([^"]*)"')


def spark_error_summary(exc: Exception) -> str:
    """The first meaningful line of a Spark (or py4j-wrapped JVM, or Spark Connect gRPC) error, at most 200
    characters."""
    grpc = GRPC_STATUS.search(str(exc))
    if grpc:  # "<_InactiveRpcError ... status = StatusCode.UNAVAILABLE ... details = "...">"
        return f"Spark Connect: {grpc.group(1)}: {grpc.group(2)}"[:200]
    for line in str(exc).strip().splitlines():
        text = line.strip().removeprefix(":").strip()
        if text and not text.startswith("An error occurred while calling"):
            return text.removeprefix("org.apache.spark.SparkException: ")[:200]
    return exc.__class__.__name__
