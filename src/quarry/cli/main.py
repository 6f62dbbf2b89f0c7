"""The root command: global options and the command groups."""

from __future__ import annotations

from pathlib import Path

import typer

from quarry import __version__
from quarry.cli import answers, ingest, keys, models, projects, search, server, users
from quarry.cli.common import CliState

app = typer.Typer(
    name="quarry",
    help="quarry: self-hosted retrieval and LLM service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quarry {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", envvar="QUARRY_CONFIG", help="A TOML settings file."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """quarry: self-hosted retrieval and LLM service."""
    ctx.obj = CliState(config=config)


server.register(app)
ingest.register(app)
search.register(app)
answers.register(app)
models.register(app)
app.add_typer(projects.app, name="projects", help="Create, list, show and delete projects.")
app.add_typer(keys.app, name="keys", help="Create, list and revoke API keys.")
app.add_typer(users.app, name="users", help="Create and list users (admin).")


def main() -> None:
    app()
