"""Wall time and peak RSS of a process tree, and the machine line: shared with `taxi-duration bench` (one copy,
in the package); and the one way benchmark scripts rewrite their section of docs/benchmarks.md."""

import subprocess
import sys
from pathlib import Path

from taxi_duration.bench.measure import Measured, machine, run_measured

__all__ = ["CLI", "REPO", "Measured", "machine", "replace_doc_section", "run_measured"]

REPO = Path(__file__).resolve().parents[1]  # the checkout: docs/, benchmarks/results/, the package's data
CLI = str(Path(sys.executable).parent / "taxi-duration")  # the console script of the running interpreter's venv


def replace_doc_section(doc: Path, start: str, end: str, section: str) -> None:
    """Put `section` (which begins with `start` and ends with `end`) where those markers stand in `doc`, or append
    it when they are not there yet."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")


def baseline_source(rev: str, workspace: Path) -> Path:
    """The package's source at `rev`, exported under the workspace; put first on PYTHONPATH it shadows the
    checkout's editable install (the console script imports `taxi_duration` from sys.path)."""
    out = workspace / f"baseline-{rev}"
    if not (out / "src" / "taxi_duration").exists():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "src"
