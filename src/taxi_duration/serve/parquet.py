"""Parquet in serving is optional: the request log and `predict` on Parquet files need pyarrow, serving does not.

pyarrow is most of a serving install's size (about 170 MB of 490: docs/benchmarks.md, install size), and the API
and `predict` on CSV or JSON lines never touch it: the exported model is JSON. So the base install leaves it out
and the `parquet` extra brings it; the pipeline install has it (pyspark needs it). Asking for Parquet without it
is one line naming the extra, exit 2.
"""

from __future__ import annotations

import importlib.util

from taxi_duration.errors import ConfigError

PARQUET_EXTRA = "pip install 'taxi-duration-predictor[parquet]'"


def has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def require_pyarrow(what: str) -> None:
    """Raise a one-line ConfigError naming `what` asked for Parquet when pyarrow is not installed."""
    if not has_pyarrow():
        raise ConfigError(
            f"{what}: Parquet needs pyarrow, which the serving install leaves out ({PARQUET_EXTRA}, "
            "or the pipeline install)"
        )
