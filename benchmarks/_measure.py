"""Wall time and peak RSS of a process tree, and the machine line: shared with `taxi-duration bench` (one copy,
in the package); and the one way benchmark scripts rewrite their section of docs/benchmarks.md."""

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
