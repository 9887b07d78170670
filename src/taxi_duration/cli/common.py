"""What every command shares: the global options' context, output (console, the JSON line), stages, errors."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from taxi_duration.settings import Settings, get_settings

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout as the last line.")]


class Context:
    """What the global options decided, shared by every command."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings(**self.overrides)
        return self._settings


def _console(as_json: bool) -> Console:
    # with --json the human-readable output goes to stderr so stdout carries only the JSON line
    console = Console(stderr=as_json, highlight=False)
    if not console.is_terminal:
        console.width = 140  # logs and CI: wide enough for the tables
    return console


_json_emitted: list[bool] = []  # whether this process printed its JSON line (an exit code after it is not an error)


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()
    _json_emitted.append(True)


@contextmanager
def _stage(console: Console, message: str) -> Iterator[None]:
    start = time.perf_counter()
    with console.status(f"{message} ..."):
        yield
    console.print(f"[green]done[/green] {message} ({time.perf_counter() - start:.1f} s)")


def _spark(settings: Settings) -> Any:
    from taxi_duration.spark import configure_driver_process, get_spark

    configure_driver_process(settings)  # the CLI is the entry point: TZ, and the GC under Spark Connect
    return get_spark(settings)


def _params(settings: Settings) -> Any:
    from taxi_duration.params import load_params

    return load_params(settings.config)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _alias(settings: Settings, given: str | None) -> str:
    """An alias option, else the champion alias of the pipeline config (the one `train` moves)."""
    return given if given is not None else str(_params(settings).registry.champion_alias)


def _fail(message: str, code: int, as_json: bool, hint: str = "") -> None:
    """The one way a failed command ends: one terminal-safe line on stderr (control characters from users' files
    escaped), with --json also `{"error": ..., "code": ...}` as the last line of stdout, and the exit code."""
    from taxi_duration.errors import terminal_safe

    sys.stderr.write(f"error: {terminal_safe(message)}\n{hint}")
    if as_json:
        _emit_json({"error": message, "code": code})
    sys.exit(code)
