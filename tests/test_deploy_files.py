"""The deployment files say what they should: docker-compose.yml, the Dockerfile and the Databricks bundle.

No Docker engine or Databricks workspace here, so the files are checked for structure, secure defaults and
that every command they run exists in our CLI with the options they pass; `docker-compose config` validates
the compose file when the binary is installed (CI installs Debian's docker-compose). The wheel they ship is
built and imported from its zip, as spark-submit's --py-files does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from taxi_duration import cli
from taxi_duration.settings import Settings
from taxi_duration.spark import launched_by_spark_submit, session_master

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
BUNDLE = REPO / "databricks.yml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def cli_group() -> Any:
    """The click-style command group typer builds from our app (typer >= 0.29 vendors its own click)."""
    return typer.main.get_command(cli.app)


def option_names(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def check_cli_arguments(args: list[str]) -> Any:
    """`args` (without the program name) name a real command and pass only options it has; return it."""
    group = cli_group()
    global_options = option_names(group)
    index = 0
    while args[index].startswith("--"):  # global options, each with a value
        assert args[index] in global_options, f"unknown global option {args[index]}"
        index += 2
    name, rest = args[index], args[index + 1 :]
    command = group.commands.get(name)
    assert command is not None, f"no command {name!r}; have {sorted(group.commands)}"
    if hasattr(command, "commands"):  # a sub-group, e.g. `cluster start`
        command = command.commands[rest[0]]
        rest = rest[1:]
    known = option_names(command)
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=")[0] in known, f"`{name}` has no option {arg}; it has {sorted(known)}"
    return command


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


# --- docker-compose.yml -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def test_compose_services_are_built_from_our_dockerfile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"spark-master", "spark-worker-1", "spark-worker-2", "mlflow", "api", "pipeline"}
    version = PYPROJECT["project"]["version"]
    for name, service in services.items():
        target = "serve" if name == "api" else "pipeline"  # the API from the image without Spark or Java
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile", "target": target}, name
        image = f"taxi-duration-serve:{version}" if name == "api" else f"taxi-duration:{version}"
        assert service["image"] == image, name


def test_compose_publishes_only_on_loopback_and_disables_rest_submission(compose: dict[str, Any]) -> None:
    published = {
        name: service.get("ports", []) for name, service in compose["services"].items() if service.get("ports")
    }
    assert published == {
        "spark-master": ["127.0.0.1:8080:8080"],  # the web UI; 7077 stays inside the compose network
        "mlflow": ["127.0.0.1:5000:5000"],
        "api": ["127.0.0.1:8000:8000"],
    }
    assert not any("6066" in str(s.get("ports", [])) + str(s.get("expose", [])) for s in compose["services"].values())
    master = compose["services"]["spark-master"]
    assert "-Dspark.master.rest.enabled=false" in master["environment"]["SPARK_MASTER_OPTS"].split()
    assert master["command"][:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    assert master["command"][master["command"].index("--port") + 1] == "7077"
    for index in (1, 2):
        worker = compose["services"][f"spark-worker-{index}"]
        assert worker["command"][:3] == [
            "spark-class",
            "org.apache.spark.deploy.worker.Worker",
            "spark://spark-master:7077",
        ]
        assert worker["command"][worker["command"].index("--cores") + 1] == "1"


def test_compose_mlflow_server_and_api(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("sqlite:////mlflow/")
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == "/mlflow/artifacts"
    assert "mlflow:5000" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")

    api = compose["services"]["api"]
    assert api["command"][0] == "taxi-duration"
    serve = check_cli_arguments(api["command"][1:])
    assert serve.name == "serve"
    assert api["environment"]["TAXI_DURATION_TRACKING_URI"] == "http://mlflow:5000"
    # the admin key comes from the environment, and compose refuses to start the API without one
    assert api["environment"]["TAXI_DURATION_ADMIN_KEY"].startswith("${TAXI_DURATION_ADMIN_KEY:?")
    assert "admin_key" in Settings.model_fields  # read by Settings, like every TAXI_DURATION_* variable
    assert set(api["environment"]) <= {f"TAXI_DURATION_{name.upper()}" for name in Settings.model_fields}


def test_compose_pipeline_jobs_run_our_cli_against_the_master(compose: dict[str, Any]) -> None:
    pipeline = compose["services"]["pipeline"]
    entry = pipeline["entrypoint"]
    assert entry[:3] == ["/usr/bin/tini", "--", "taxi-duration"]
    # the entrypoint's global options plus a command, e.g. `docker-compose run --rm pipeline train --model gbt`
    check_cli_arguments([*entry[3:], "train", "--model", "gbt"])
    assert entry[entry.index("--master") + 1] == "spark://spark-master:7077"
    assert pipeline["profiles"] == ["jobs"]  # not started by `docker-compose up`
    # driver and executors see the same workspace and input files
    for name in ("pipeline", "spark-worker-1", "spark-worker-2"):
        mounts = compose["services"][name]["volumes"]
        assert "workspace:/workspace" in mounts and "./data:/data:ro" in mounts, name


def dockerfile_stages() -> dict[str, str]:
    """Stage name -> its text (from its FROM line to the next)."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.M)[1:]
    return {re.match(r"FROM \S+ AS (\S+)", part).group(1): part for part in parts}  # type: ignore[union-attr]


def test_dockerfile_official_python_java17_not_root() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, flags=re.M) == ["python:3.11-slim-bookworm"] * 3
    stages = dockerfile_stages()
    assert list(stages) == ["build", "serve", "pipeline"]  # pipeline last: the default target
    assert "pip wheel --no-cache-dir --no-deps -w /dist ." in stages["build"]
    pipeline = stages["pipeline"]
    assert "openjdk-17-jre-headless" in pipeline
    assert 'pip install --no-cache-dir "${wheel}[spark]"' in pipeline
    assert re.search(r"^USER app$", pipeline, flags=re.M)
    assert "taxi_duration_predictor-*.whl" in pipeline


def test_dockerfile_serving_image_has_no_java_no_spark_and_serves_the_api() -> None:
    serve = dockerfile_stages()["serve"]
    assert "apt-get" not in serve and "openjdk" not in serve and "java" not in serve.lower()
    installs = re.findall(r"pip install [^\n]*", serve)
    # no extras by default (no pyspark, no pyarrow); SERVE_EXTRAS='[parquet]' adds the request log's pyarrow
    assert installs == ['pip install --no-cache-dir "${wheel}${SERVE_EXTRAS}" \\']
    assert re.search(r'^ARG SERVE_EXTRAS=""$', serve, flags=re.M)
    assert "pyarrow" not in " ".join(PYPROJECT["project"]["dependencies"])
    assert re.search(r"^USER app$", serve, flags=re.M)
    command = json.loads(re.search(r"^CMD (.*)$", serve, flags=re.M).group(1))  # type: ignore[union-attr]
    assert command[0] == "taxi-duration"
    check_cli_arguments(command[1:])
    # the base install (what the serving image gets) has no pyspark, no full MLflow, no plotting
    base = " ".join(PYPROJECT["project"]["dependencies"])
    assert "pyspark" not in base and "matplotlib" not in base and '"mlflow>' not in base
    assert any(d.startswith("mlflow-skinny") for d in PYPROJECT["project"]["dependencies"])


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (CI installs it)")
def test_docker_compose_config_validates() -> None:
    env = {**os.environ, "TAXI_DURATION_ADMIN_KEY": "test-key"}
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    resolved = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True, timeout=60
    )
    api = yaml.safe_load(resolved.stdout)["services"]["api"]
    assert api["environment"]["TAXI_DURATION_ADMIN_KEY"] == "test-key"
    assert api["ports"] == ["127.0.0.1:8000:8000/tcp"]
    env.pop("TAXI_DURATION_ADMIN_KEY")
    missing = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0
    assert "set TAXI_DURATION_ADMIN_KEY" in missing.stderr


# --- databricks.yml ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return load_yaml(BUNDLE)


def substitute(value: str, variables: dict[str, Any]) -> str:
    """${var.x} -> the variable's default; other ${...} (bundle.target) -> a placeholder."""
    value = re.sub(r"\$\{var\.([a-z_]+)\}", lambda m: str(variables[m.group(1)]["default"]), value)
    return re.sub(r"\$\{[a-z_.]+\}", "dev", value)


def test_bundle_structure(bundle: dict[str, Any]) -> None:
    assert bundle["bundle"]["name"] == "taxi-duration"
    artifact = bundle["artifacts"]["taxi_duration_wheel"]
    assert (artifact["type"], artifact["path"]) == ("whl", ".")
    assert "-w dist" in artifact["build"]
    assert bundle["targets"]["dev"] == {"mode": "development", "default": True}
    assert bundle["targets"]["prod"]["mode"] == "production"
    declared = set(bundle["variables"])
    used = set(re.findall(r"\$\{var\.([a-z_]+)\}", BUNDLE.read_text()))
    assert used <= declared, used - declared
    assert all("default" in spec and spec.get("description") for spec in bundle["variables"].values())


def test_bundle_jobs_are_wheel_tasks_of_our_cli(bundle: dict[str, Any]) -> None:
    jobs = bundle["resources"]["jobs"]
    variables = bundle["variables"]
    distribution = normalized(PYPROJECT["project"]["name"])
    scripts = PYPROJECT["project"]["scripts"]
    commands = {}
    for key in ("taxi_duration_ingest", "taxi_duration_train", "taxi_duration_score", "taxi_duration_report"):
        (task,) = jobs[key]["tasks"]
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == distribution
        assert scripts[wheel_task["entry_point"]] == "taxi_duration.cli:main"
        assert task["libraries"] == [{"whl": "./dist/*.whl"}]
        args = [substitute(str(arg), variables) for arg in wheel_task["parameters"]]
        commands[key] = check_cli_arguments(args).name
        assert args[:2] == ["--workspace", "/Volumes/main/taxi_duration/taxi_duration/workspace"]
        (cluster,) = jobs[key]["job_clusters"]
        assert cluster["job_cluster_key"] == task["job_cluster_key"]
        env = cluster["new_cluster"].get("spark_env_vars", {})
        settings_env = {f"TAXI_DURATION_{name.upper()}" for name in Settings.model_fields}
        assert set(env) - {"MLFLOW_DFS_TMP"} <= settings_env
        if key != "taxi_duration_report":  # what touches MLflow goes to Databricks' tracking and UC registry
            assert (env["TAXI_DURATION_TRACKING_URI"], env["TAXI_DURATION_REGISTRY_URI"]) == (
                "databricks",
                "databricks-uc",
            )
            assert substitute(env["TAXI_DURATION_MODEL_NAME"], variables) == "main.taxi_duration.taxi_duration"
            assert env["MLFLOW_DFS_TMP"].startswith("/Volumes/")
    assert commands == {
        "taxi_duration_ingest": "ingest",
        "taxi_duration_train": "train",
        "taxi_duration_score": "score",
        "taxi_duration_report": "report",
    }
    ingest_args = jobs["taxi_duration_ingest"]["tasks"][0]["python_wheel_task"]["parameters"]
    assert substitute(ingest_args[-1], variables).startswith("dbfs:/databricks-datasets/nyctaxi/")

    chain = {t["task_key"]: t for t in jobs["taxi_duration_pipeline"]["tasks"]}
    assert {key: t["run_job_task"]["job_id"] for key, t in chain.items()} == {
        stage: f"${{resources.jobs.taxi_duration_{stage}.id}}" for stage in ("ingest", "train", "score", "report")
    }
    assert [d["task_key"] for d in chain["score"]["depends_on"]] == ["train"]
    assert [d["task_key"] for d in chain["train"]["depends_on"]] == ["ingest"]


def test_bundle_cycle_job_branches_on_the_monitor_alert(bundle: dict[str, Any]) -> None:
    """The scheduled cycle as MLOps Stacks builds it: monitor -> condition task on its `alert` task value ->
    retrain on the `true` branch only; every wheel task a real command with real options."""
    job = bundle["resources"]["jobs"]["taxi_duration_cycle"]
    variables = bundle["variables"]
    schedule = job["schedule"]
    cron = substitute(schedule["quartz_cron_expression"], variables).split()
    assert len(cron) == 6 and schedule["pause_status"] == "UNPAUSED" and schedule["timezone_id"]
    assert job["max_concurrent_runs"] == 1  # two cycles at once would both retrain
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert list(tasks) == ["ingest_score_monitor", "alert_check", "retrain", "monitoring_notebook"]
    assert tasks["monitoring_notebook"]["depends_on"] == [{"task_key": "ingest_score_monitor"}]  # alert or not
    monitor_args = [
        substitute(str(a), variables) for a in tasks["ingest_score_monitor"]["python_wheel_task"]["parameters"]
    ]
    assert check_cli_arguments(monitor_args).name == "cycle" and "--no-retrain" in monitor_args
    condition = tasks["alert_check"]["condition_task"]
    # the monitor publishes `alert` as a task value ("true"/"false", monitor.command.set_job_task_values)
    assert condition == {"op": "EQUAL_TO", "left": "{{tasks.ingest_score_monitor.values.alert}}", "right": "true"}
    assert tasks["alert_check"]["depends_on"] == [{"task_key": "ingest_score_monitor"}]
    assert "job_cluster_key" not in tasks["alert_check"]  # a condition task needs no cluster
    assert tasks["retrain"]["depends_on"] == [{"task_key": "alert_check", "outcome": "true"}]
    retrain_args = [substitute(str(a), variables) for a in tasks["retrain"]["python_wheel_task"]["parameters"]]
    assert check_cli_arguments(retrain_args).name == "train"
    assert retrain_args[retrain_args.index("--window-months") + 1] == "3"
    (cluster,) = job["job_clusters"]
    assert {t.get("job_cluster_key") for t in tasks.values()} == {cluster["job_cluster_key"], None}
    env = cluster["new_cluster"]["spark_env_vars"]
    assert (env["TAXI_DURATION_TRACKING_URI"], env["TAXI_DURATION_REGISTRY_URI"]) == ("databricks", "databricks-uc")


def test_bundle_notebook_tasks_run_every_committed_notebook(bundle: dict[str, Any]) -> None:
    """Each notebook of notebooks/ is a notebook task (the .ipynb itself, as bundles deploy it) on a cluster with the
    wheel, given the same workspace as the wheel tasks through the `workspace` widget (taxi_duration.notebook)."""
    variables = bundle["variables"]
    used = {}
    for key, job in bundle["resources"]["jobs"].items():
        for task in job["tasks"]:
            if "notebook_task" not in task:
                continue
            notebook = task["notebook_task"]
            path = (BUNDLE.parent / notebook["notebook_path"]).resolve()
            assert path.is_file() and path.suffix == ".ipynb", notebook["notebook_path"]
            workspace = substitute(notebook["base_parameters"]["workspace"], variables)
            assert workspace == "/Volumes/main/taxi_duration/taxi_duration/workspace"
            assert task["libraries"] == [{"whl": "./dist/*.whl"}]
            assert task["job_cluster_key"] in {c["job_cluster_key"] for c in job["job_clusters"]}
            used[path.stem] = (key, task["task_key"])
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
    assert sorted(used) == notebooks and len(notebooks) == 4
    job = bundle["resources"]["jobs"]["taxi_duration_notebooks"]
    assert [(t["task_key"], [d["task_key"] for d in t.get("depends_on", [])]) for t in job["tasks"]] == [
        ("explore_trips", []),
        ("train_and_compare", ["explore_trips"]),
        ("score_and_predictions", ["train_and_compare"]),
    ]
    env = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]
    assert (env["TAXI_DURATION_TRACKING_URI"], env["TAXI_DURATION_REGISTRY_URI"]) == ("databricks", "databricks-uc")
    assert used["04_monitoring"] == ("taxi_duration_cycle", "monitoring_notebook")


# --- spark-submit: who decides the master, and the wheel it ships ------------------------------------------------


@pytest.mark.parametrize(
    ("given", "submitted", "expected"),
    [
        (None, False, "local[*]"),  # plain `taxi-duration COMMAND`
        (None, True, None),  # spark-submit's --master stands
        ("local[2]", True, "local[2]"),  # an explicit --master wins even under spark-submit
        ("spark://127.0.0.1:7077", False, "spark://127.0.0.1:7077"),
    ],
)
def test_session_master(given: str | None, submitted: bool, expected: str | None) -> None:
    assert session_master(Settings(master=given), submitted) == expected


def test_launched_by_spark_submit_follows_the_gateway_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert launched_by_spark_submit() is False
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "41234")  # what spark-submit's PythonRunner sets for the driver
    assert launched_by_spark_submit() is True


def test_the_package_runs_from_its_wheel_as_a_zip(tmp_path: Path, built_wheel: Path) -> None:
    """spark-submit --py-files puts the wheel itself on sys.path: package data must load from inside the zip."""
    wheel = built_wheel
    probe = f"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, {str(wheel)!r})
import taxi_duration
from taxi_duration.params import load_params
from taxi_duration.serve.predictor import _package_folder
from taxi_duration.zones import load_zones
zones = load_zones()
with tempfile.TemporaryDirectory() as tmp:
    folder = _package_folder(Path(tmp))
    lookup = (folder / "data" / "taxi_zone_lookup.csv").read_bytes()
print(json.dumps({{
    "file": taxi_duration.__file__,
    "zones": len(zones),
    "zone_132": [zones[131].zone, zones[131].borough, zones[131].is_airport],
    "model": load_params(None).train.model,
    "lookup_bytes": len(lookup),
}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["file"] == f"{wheel}/taxi_duration/__init__.py"
    assert found["zones"] == 265
    assert found["zone_132"] == ["JFK Airport", "Queens", 1]
    assert found["model"] == "gbt"
    assert found["lookup_bytes"] == (REPO / "src" / "taxi_duration" / "data" / "taxi_zone_lookup.csv").stat().st_size
