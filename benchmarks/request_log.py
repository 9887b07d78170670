"""The request log's cost: microseconds a request spends queueing its row, and the CPU its writer process spends
per 4,096 rows (decoding what the server sent, Arrow columns, zstd Parquet), measured from /proc and the
process's resource usage once it has ended.

The writer's CPU is counted whole, until it has made its file and ended (it converts the rows it holds when a file
is closed), less that of an idle writer started and closed the same way (its start-up and exit). It is what the log
takes from the server and the load generator on a machine whose cores are busy (docs/benchmarks.md, "Serving as a
product"). Rows are varied like real ones (distinct ride ids, times, distances, a share of missing values). The
writer's start-up (importing pyarrow and NumPy) is measured apart. To compare with another checkout's code, run this
script with its `src` first on the path, e.g.
    PYTHONPATH=../old/src python benchmarks/request_log.py
(the writer process inherits the path); `module` in the results says which code ran. Usage:
    python benchmarks/request_log.py [--rows 122880] [--repeats 3]
Prints one JSON line per repeat and writes benchmarks/results/request-log-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _measure import REPO, machine


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def settled_cpu(pid: int) -> float:
    """The process's CPU once it has stopped using any (its imports are done, it waits for input)."""
    last = -1.0
    while True:
        now = cpu_seconds(pid)
        if now == last:
            return now
        last = now
        time.sleep(0.5)


def rows(n: int, seed: int = 7) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    logged = 1_765_000_000_000_000
    out = []
    for i in range(n):
        distance = None if rng.random() < 0.3 else round(rng.uniform(0.3, 25), 2)
        out.append(
            (
                logged + i * 250,
                f"ride-{i:09d}",
                logged - 5 * 3_600_000_000 + rng.randrange(0, 3_600_000_000),
                rng.randint(1, 263),
                rng.randint(1, 263),
                distance,
                None,
                None,
                None,
                None,
                rng.choice((1, 1, 1, 2, None)),
                "yellow",
                "recorded_distance" if distance is not None else "zones_only",
                rng.uniform(3, 60),
                "taxi-duration",
                "7",
                None,
                None,
            )
        )
    return out


def one_run(batch: list[tuple[Any, ...]]) -> dict[str, Any]:
    from taxi_duration.serve.request_log import RequestLog

    with tempfile.TemporaryDirectory(prefix="request-log-bench-") as folder:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the writer's whole CPU, once it has ended
        children_before = children.ru_utime + children.ru_stime
        log = RequestLog(Path(folder))
        pid = log._process.pid
        started = settled_cpu(pid)
        per_append = []
        for start in range(0, len(batch), 4096):  # about a second of a busy server's rides at a time (none: idle)
            chunk = batch[start : start + 4096]
            begin = time.perf_counter()
            for row in chunk:
                log.append(row)
            per_append.append((time.perf_counter() - begin) / len(chunk) * 1e6)
            time.sleep(0.05)
        deadline = time.monotonic() + 120
        while log.rows_written < len(batch) and time.monotonic() < deadline:
            time.sleep(0.1)
        written = log.rows_written
        log.close()  # the writer makes its file of the rows it holds, then ends
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        working = children.ru_utime + children.ru_stime - children_before - started
        size = sum(f.stat().st_size for f in log.files())
    if not batch:  # an idle writer: its start and end only, taken off the others' CPU
        return {"writer_idle_cpu_s": round(working, 3)}
    return {
        "rows_written": written,
        "rows_dropped": log.rows_dropped,
        "writer_startup_cpu_s": round(started, 2),
        "writer_cpu_s": round(working, 3),
        "append_us_median": round(statistics.median(per_append), 3),
        "parquet_bytes_per_row": round(size / written, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30 * 4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import taxi_duration.serve.request_log as module

    batch = rows(args.rows)
    idle = statistics.median(one_run([])["writer_idle_cpu_s"] for _ in range(args.repeats))
    runs = []
    for _ in range(args.repeats):
        run = one_run(batch)
        run["writer_cpu_ms_per_4096_rows"] = round((run["writer_cpu_s"] - idle) * 1000 / run["rows_written"] * 4096, 2)
        print(json.dumps(run), flush=True)
        runs.append(run)
    results = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "module": module.__file__,
        "rows": args.rows,
        "writer_idle_cpu_s": idle,
        "runs": runs,
        "writer_cpu_ms_per_4096_rows_median": statistics.median(r["writer_cpu_ms_per_4096_rows"] for r in runs),
        "append_us_median": statistics.median(r["append_us_median"] for r in runs),
    }
    out = REPO / "benchmarks" / "results" / f"request-log-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
