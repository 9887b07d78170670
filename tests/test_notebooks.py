"""The notebooks in notebooks/, executed end to end in real Jupyter kernels (nbclient) on the real 2019-03 sample:
a copy of the shared champion workspace, with a monitor run over its last week. Each notebook runs in a fresh kernel
with its own local Spark, as a user opening it would; an error in any cell fails the test. Pointed at an empty
workspace, each stops at its first cell with one line saying what to run first. Committed notebooks carry no
outputs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from pyspark.sql import SparkSession

from conftest import cli_json, copy_workspace
from taxi_duration.lakehouse import read_trips

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "notebooks"  # executed copies to look at (gitignored)
NAMES = ("01_explore_trips", "02_train_and_compare", "03_score_and_predictions", "04_monitoring")


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def execute(name: str, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    notebook = read(name)
    run(notebook, workspace, monkeypatch)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, ARTIFACTS / f"{name}.ipynb")
    return notebook


def run(notebook: nbformat.NotebookNode, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every cell in a new kernel of this interpreter (outputs land in `notebook`), the workspace given through
    the environment as `TAXI_DURATION_WORKSPACE` reaches a user's kernel."""
    monkeypatch.setenv("TAXI_DURATION_WORKSPACE", str(workspace))
    monkeypatch.setenv("TAXI_DURATION_CONFIG", str(workspace / "small.yaml"))
    monkeypatch.setenv("TAXI_DURATION_MASTER", "local[2]")
    monkeypatch.setenv("TAXI_DURATION_DRIVER_MEMORY", "1g")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": "/"}}).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[list[dict[str, Any]]]:
    return [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]


def png_count(notebook: nbformat.NotebookNode) -> int:
    found = [o for cell in outputs(notebook) for o in cell if "image/png" in o.get("data", {})]
    assert all(base64.b64decode(o["data"]["image/png"]).startswith(b"\x89PNG") for o in found)
    return len(found)


def html_of(cell_outputs: list[dict[str, Any]]) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell_outputs)


def text_of(cell_outputs: list[dict[str, Any]]) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in cell_outputs)


@pytest.fixture(scope="module")
def workspace(sample_champion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The champion workspace with one monitor run: the sample's last week against the champion's training trips."""
    workspace = copy_workspace(sample_champion, tmp_path_factory.mktemp("notebooks"))
    monitored = cli_json(
        workspace, "monitor", "--from", "2019-03-25", "--to", "2019-04-01", config=workspace / "small.yaml"
    )
    assert monitored["rows_current"] > 1000
    return workspace


def test_the_committed_notebooks_carry_no_outputs() -> None:
    for name in NAMES:
        notebook = read(name)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert (cell.outputs, cell.execution_count) == ([], None), (
                    f"{name}: clear the outputs before committing"
                )
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == list(NAMES)


def test_explore_shows_the_quality_report_the_tables_and_charts(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, spark: SparkSession
) -> None:
    notebook = execute("01_explore_trips", workspace, monkeypatch)
    cells = outputs(notebook)
    assert str(workspace.resolve()) in text_of(cells[1])
    files, reasons = html_of(cells[2]), html_of(cells[3])
    assert "taxis_sample_2019-03.csv" in files and "6500" in files and "6352" in files and "148" in files
    assert "<th>reason</th>" in reasons.replace(' style="text-align: right;"', "") and "meaning" in reasons
    assert "Manhattan" in html_of(cells[4])
    assert png_count(notebook) == 3  # by borough, weekday x hour, by hour
    columns = len(read_trips(spark, workspace / "lakehouse" / "trips").columns)
    assert f"5 rows \N{MULTIPLICATION SIGN} {columns} columns" in html_of(cells[7])


def test_train_and_compare_trains_a_challenger_and_lists_the_runs_by_regime(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("02_train_and_compare", workspace, monkeypatch)
    cells = outputs(notebook)
    assert "'version': '2'" in text_of(cells[2])  # v1 is the workspace's champion
    runs = html_of(cells[3])
    for column in ("baseline_rmsle", "recorded_distance_rmsle", "zones_only_rmsle"):
        assert column in runs
    assert runs.count("gbt") == 2  # both training runs, the monitor run left out
    assert png_count(notebook) == 1


def test_score_writes_predictions_and_shows_errors_by_borough_and_regime(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("03_score_and_predictions", workspace, monkeypatch)
    cells = outputs(notebook)
    assert "'rows': 6352" in text_of(cells[2])
    errors = html_of(cells[3])
    assert "Manhattan" in errors and "recorded_distance" in errors and "rmsle" in errors
    assert png_count(notebook) == 1


def test_monitoring_reads_the_tables_and_the_decision(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("04_monitoring", workspace, monkeypatch)
    cells = outputs(notebook)
    assert "2019-03-25" in html_of(cells[1])
    decision = text_of(cells[2])
    assert "'alert': " in decision and "'reasons': " in decision and "'realized_rmsle': " in decision
    assert "psi" in html_of(cells[3])
    assert png_count(notebook) == 1


@pytest.mark.parametrize(
    ("name", "what"),
    [
        (
            "01_explore_trips",
            "no trips ingested yet; run `taxi-duration --workspace {w} ingest FILE...` (or `make demo`) first",
        ),
        (
            "02_train_and_compare",
            "no trips ingested yet; run `taxi-duration --workspace {w} ingest FILE...` (or `make demo`) first",
        ),
        (
            "03_score_and_predictions",
            "no trips ingested yet; run `taxi-duration --workspace {w} ingest FILE...` (or `make demo`) first",
        ),
        (
            "04_monitoring",
            "no monitoring runs yet; run `taxi-duration --workspace {w} monitor --from DATE --to DATE` first",
        ),
    ],
)
def test_an_empty_workspace_ends_the_notebook_with_one_line_saying_what_to_run(
    name: str, what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = (tmp_path / "empty").resolve()
    empty.mkdir()
    (empty / "small.yaml").write_text("{}\n")
    notebook = read(name)
    with pytest.raises(CellExecutionError) as failed:
        run(notebook, empty, monkeypatch)
    assert failed.value.ename == "NotReady"
    # the first cell after the parameters shows one line, the whole output of the run
    expected = f"NotReady: {empty}: {what.format(w=empty)}"
    shown = outputs(notebook)
    assert shown[1] == [
        {
            "output_type": "error",
            "ename": "NotReady",
            "evalue": expected.removeprefix("NotReady: "),
            "traceback": [expected],
        }
    ]
    assert all(cell == [] for cell in shown[2:])
    assert sorted(p.name for p in empty.iterdir()) == ["small.yaml"]  # nothing written, no Spark started


def test_trips_without_a_champion_stop_the_scoring_notebook_before_spark_starts(
    sample_ingested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = copy_workspace(sample_ingested, tmp_path / "ingested").resolve()
    notebook = read("03_score_and_predictions")
    with pytest.raises(CellExecutionError):
        run(notebook, workspace, monkeypatch)
    command = f"taxi-duration --workspace {workspace} train"
    expected = f"NotReady: {workspace}: no model taxi-duration@champion yet; run `{command}` first"
    assert [o["traceback"] for o in outputs(notebook)[1]] == [[expected]]
    assert not (workspace / "mlflow.db").exists()  # looking did not create a store


def test_on_databricks_the_widget_names_the_workspace_and_the_runtimes_spark_is_used(tmp_path: Path) -> None:
    """What a Databricks notebook has that a local kernel has not, given to a real kernel as the runtime gives it:
    `dbutils` with the job's `workspace` widget and a ready `spark`. The package takes both (no session is built)."""
    given = str(tmp_path / "from-widget")
    cells = [
        f"class Widgets:\n    def get(self, name):\n        return {{'workspace': {given!r}}}[name]",
        "class DBUtils:\n    widgets = Widgets()\n\ndbutils = DBUtils()\nspark = object()  # the runtime's session",
        "from taxi_duration import notebook as nb\n\nsettings = nb.settings(None)\n"
        f"assert str(settings.workspace) == {given!r}, settings.workspace\n"
        "assert nb.session(settings) is spark\n"
        "assert str(nb.settings('/elsewhere').workspace) == '/elsewhere'  # the notebook's own value wins",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    assert not any(o["output_type"] == "error" for cell in notebook.cells for o in cell.outputs)
