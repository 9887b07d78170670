"""The Spark model's output as users read it: the predicted ln(seconds) turned into minutes (the inverse of
`with_label`). Training, batch scoring, the stream and monitoring all convert through this one function."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def minutes_from_log_seconds(prediction: Column) -> Column:
    """Model output (ln seconds) -> minutes."""
    return F.exp(prediction) / F.lit(60.0)
