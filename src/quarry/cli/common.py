"""What every command shares: settings, the runtime, the acting user, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from quarry.db.database import StartupError
from quarry.errors import QuarryError
from quarry.logs import configure_logging
from quarry.runtime import Runtime, open_runtime
from quarry.settings import Settings, SettingsError, load_settings
from quarry.tenancy.models import Principal

T = TypeVar("T")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


@dataclass
class CliState:
    config: Path | None = None


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise typer.Exit(code)


def settings_from(ctx: typer.Context, *, quiet: bool = True, **overrides: Any) -> Settings:
    """Build settings for a command, or stop with the message that names the bad setting.

    Short commands log only warnings and errors (their output is for people); the long-running
    ``serve`` and ``worker`` pass ``quiet=False`` and log at the configured level."""
    state = ctx.find_object(CliState) or CliState()
    try:
        settings = load_settings(config=state.config, **overrides)
    except SettingsError as exc:
        fail(str(exc), code=2)
    if quiet and settings.log_level in ("debug", "info"):
        configure_logging(settings.model_copy(update={"log_level": "warning"}))
    else:
        configure_logging(settings)
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn startup and domain errors into clean exits."""
    try:
        return asyncio.run(coro)
    except StartupError as exc:
        fail(str(exc))
    except QuarryError as exc:
        fail(f"{exc.detail} ({exc.code})")


def api_key(settings: Settings) -> str:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = settings.admin_key_path
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        fail(
            f"no API key: set QUARRY_API_KEY, or start quarry once on this data directory "
            f"to create {path}"
        )


@asynccontextmanager
async def acting(
    settings: Settings, *, load_models: bool = False
) -> AsyncIterator[tuple[Runtime, Principal]]:
    """The runtime and the user the CLI acts as (the API key's owner).

    The key is read after the runtime opens: on a new database that start creates admin.key.
    A command does not queue the periodic sweep of kept bytes (its worker, if it runs one,
    does not take it either): that is for long-lived workers."""
    quiet = settings.model_copy(update={"blob_sweep_cron": ""})
    async with open_runtime(quiet, load_models=load_models) as rt:
        yield rt, await rt.keys.authenticate_key(api_key(settings))


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [item.model_dump(mode="json") for item in value]
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Cells are shown as they are: user text such as "[/x]" is not read as rich markup (it
    would be, and raise); pass a ``rich.text.Text`` for a styled cell."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row))
    out.print(table)


def _cell(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))
