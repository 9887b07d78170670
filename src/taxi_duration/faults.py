"""Crash points for the tests that kill: the process SIGKILLs itself at a named step, as `kill -9` would.

`TAXI_DURATION_CRASH_AT=ingest:committed taxi-duration ingest ...` dies right after the ingest commit. Steps are
named where they are called (`ingest:*` in lakehouse.py and ingest/job.py, `train:*` in train/job.py); unset (the
default), a crash point does nothing.
"""

from __future__ import annotations

import os
import signal

CRASH_AT_ENV = "TAXI_DURATION_CRASH_AT"


def crash_point(step: str) -> None:
    """Die here, with no cleanup at all, if the environment asks for it."""
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
