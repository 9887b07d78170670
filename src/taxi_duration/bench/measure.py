"""Run a command and measure its wall time and the peak resident memory of its whole process tree (JVM included).

Optionally caps the child's address space (`RLIMIT_AS`) so a run that needs more memory fails inside the child
(MemoryError, allocation failure, or a kill) instead of taking the machine down. The cap is not usable for a JVM:
it reserves far more virtual memory than it touches (heap, metaspace, code cache, thread stacks), so Spark's bound
is its driver heap (`spark.driver.memory`) instead.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    load_1min: float = 0.0  # 1-minute load average when the command ended


def parse_size(text: str) -> int:
    """Bytes in a size like 8g, 512m, 4096 (binary units, as Spark's memory settings)."""
    value = text.strip().lower().removesuffix("b")
    factor = UNITS.get(value[-1:], 1)
    number = value[:-1] if value[-1:] in UNITS else value
    try:
        size = int(float(number) * factor)
    except ValueError:
        raise ValueError(f"memory size {text!r}: expected a number with k/m/g/t, e.g. 8g") from None
    if size <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return size


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        stack.extend(_children(current))
    return total


def address_space_cap(limit_bytes: int) -> Callable[[], None]:
    """A preexec_fn that caps the child's virtual memory (inherited by its own children)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


def run_measured(
    command: list[str],
    env: dict[str, str] | None = None,
    interval: float = 0.2,
    memory_cap_bytes: int | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run to completion, sampling the tree's RSS every `interval` seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=address_space_cap(memory_cap_bytes) if memory_cap_bytes else None,
    )
    # one sample now, from this thread: a short child under load could otherwise end before the sampler thread
    # first runs, and be recorded with 0 MB (seen once in CI)
    peak = tree_rss(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\ntimed out after {timeout} s"
    done.set()
    sampler.join()
    return Measured(time.perf_counter() - start, peak / 2**20, proc.returncode, out, err, os.getloadavg()[0])


def machine() -> str:
    """One line describing this machine, for the docs."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {system}, Python {platform.python_version()}"
