"""Wall time and peak RSS of a process tree, and the machine line: shared with `taxi-duration bench` (one copy,
in the package)."""

from taxi_duration.bench.measure import Measured, machine, run_measured

__all__ = ["Measured", "machine", "run_measured"]
