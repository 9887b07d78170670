"""One source of configuration: the commands that read a registry alias take it from the pipeline config
(`registry.champion_alias`, the alias `train` moves) unless an option names one; the admin key is a setting; the
API's bounds are the config's `quality` section, as ingest's are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_http
from taxi_duration.cli import _alias
from taxi_duration.settings import Settings

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "taxi_duration" / "data" / "taxis_sample_2019-03.csv"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "prod.yaml"
    path.write_text("registry:\n  champion_alias: prod\n", encoding="utf-8")
    return path


def test_the_alias_comes_from_the_option_else_from_the_config(tmp_path: Path, config: Path) -> None:
    configured = Settings(workspace=tmp_path, config=config)
    assert _alias(configured, None) == "prod"
    assert _alias(configured, "challenger") == "challenger"
    assert _alias(Settings(workspace=tmp_path), None) == "champion"


@pytest.mark.slow  # four CLI processes
@pytest.mark.parametrize("command", [["predict", str(SAMPLE)], ["serve", "--port", "1"]])
def test_predict_and_serve_look_for_the_configured_alias(tmp_path: Path, config: Path, command: list[str]) -> None:
    """An empty registry: the one-line error names the alias the config gives, not a hard-coded one."""
    base = [sys.executable, "-m", "taxi_duration.cli", "--workspace", str(tmp_path / "ws")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXI_DURATION_")}
    configured = subprocess.run([*base, "--config", str(config), *command], capture_output=True, text=True, env=env)
    assert configured.returncode == 2
    errors = [line for line in configured.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: models:/taxi-duration@prod: no such registered model")
    default = subprocess.run([*base, *command], capture_output=True, text=True, env=env)
    assert default.returncode == 2
    assert "error: models:/taxi-duration@champion: no such registered model" in default.stderr


def test_the_admin_key_is_a_setting_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TAXI_DURATION_ADMIN_KEY", "s3cret-key")
    settings = Settings(workspace=tmp_path)
    assert settings.admin_key is not None and settings.admin_key.get_secret_value() == "s3cret-key"
    assert "s3cret-key" not in repr(settings)  # never printed with the settings
    monkeypatch.delenv("TAXI_DURATION_ADMIN_KEY")
    assert Settings(workspace=tmp_path).admin_key is None


@pytest.mark.slow
@pytest.mark.server
def test_serve_takes_the_api_bounds_from_the_config(tmp_path: Path, served_models: dict[str, Path]) -> None:
    """`--config` changes what the API accepts as it changes what ingest keeps: a tighter `quality` section."""
    config = tmp_path / "tight.yaml"
    config.write_text("quality:\n  max_distance_miles: 50\n  max_passenger_count: 4\n", encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "taxi_duration.cli", "--workspace", str(tmp_path / "ws"), "--config", str(config)]
    command += ["serve", "--model-dir", str(served_models["7"]), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXI_DURATION_")}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/ready", process, 60, log)
            ride = {"PULocationID": 132, "DOLocationID": 230, "pickup_datetime": "2024-05-01T08:30:00"}
            assert httpx.post(f"{url}/predict", json={**ride, "trip_distance": 49.0}).status_code == 200
            refused = httpx.post(f"{url}/predict", json={**ride, "trip_distance": 60.0, "passenger_count": 5})
            assert refused.status_code == 422
            fields = {error["field"]: error["message"] for error in refused.json()["errors"]}
            assert fields == {
                "trip_distance": "must be at most 50 miles, got 60.0",
                "passenger_count": "must be from 0 to 4, got 5",
            }
            ride_schema = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]["Ride"]["properties"]
            assert ride_schema["trip_distance"]["maximum"] == 50
            assert ride_schema["passenger_count"]["maximum"] == 4
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_the_driver_process_is_configured_by_the_entry_point_not_by_getting_a_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gc
    import inspect

    from taxi_duration import spark as spark_module

    monkeypatch.setenv("TZ", "UTC")
    spark_module.configure_driver_process(Settings(workspace=tmp_path))
    assert os.environ["TZ"] == spark_module.SESSION_TIME_ZONE and gc.isenabled()
    try:
        spark_module.configure_driver_process(Settings(workspace=tmp_path, remote="sc://127.0.0.1:15002"))
        assert not gc.isenabled()  # under Spark Connect only (see the docstring for the deadlock it avoids)
    finally:
        gc.enable()
    # getting a session changes nothing process-wide: neither the time zone nor the collector
    source = inspect.getsource(spark_module.get_spark) + inspect.getsource(spark_module.remote_session)
    assert "tzset" not in source and "use_session_time_zone_in_python" not in source and "gc." not in source
