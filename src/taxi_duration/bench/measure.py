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
    peak_by_process: dict[str, float] | None = None  # at the peak: MB per kind of process (java, python, ...)


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
    return sum(tree_rss_by_process(pid).values())


def _kind(pid: int) -> str:
    """What a process is, for a memory breakdown: its executable's name (java, python3.11, ...)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        return command.rsplit("/", 1)[-1] or "?"  # empty: a process that is exiting
    except OSError:
        return "?"


def tree_rss_by_process(pid: int) -> dict[int, int]:
    """Resident bytes of each process of the tree rooted at `pid` (from /proc), by pid."""
    found: dict[int, int] = {}
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            found[current] = int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        stack.extend(_children(current))
    return found


def by_kind(sizes: dict[int, int]) -> dict[str, float]:
    """MB per kind of process, e.g. {"java": 5200.0, "python3.11 x3": 900.0}."""
    kinds: dict[str, list[int]] = {}
    for pid, size in sizes.items():
        kinds.setdefault(_kind(pid), []).append(size)
    return {
        (name if len(sizes_) == 1 else f"{name} x{len(sizes_)}"): round(sum(sizes_) / 2**20)
        for name, sizes_ in sorted(kinds.items())
    }


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
    cwd: Path | None = None,
) -> Measured:
    """Run to completion (in `cwd`, if given), sampling the tree's RSS every `interval` seconds (and, at the peak,
    which processes held it)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        preexec_fn=address_space_cap(memory_cap_bytes) if memory_cap_bytes else None,
    )
    # one sample now, from this thread: a short child under load could otherwise end before the sampler thread
    # first runs, and be recorded with 0 MB (seen once in CI)
    sizes = tree_rss_by_process(proc.pid)
    peak, at_peak = sum(sizes.values()), by_kind(sizes)  # kinds read now: the processes may be gone at the end
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, at_peak
        while not done.is_set():
            sizes = tree_rss_by_process(proc.pid)
            if sum(sizes.values()) > peak:
                peak, at_peak = sum(sizes.values()), by_kind(sizes)
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
    seconds = time.perf_counter() - start
    return Measured(seconds, peak / 2**20, proc.returncode, out, err, os.getloadavg()[0], at_peak)


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
