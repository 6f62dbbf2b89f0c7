"""quarry users ..."""

from __future__ import annotations

import typer

from quarry.cli.common import (
    JSON_OPTION,
    acting,
    err,
    out,
    print_json,
    print_table,
    run,
    settings_from,
)
from quarry.tenancy.models import User
from quarry.tenancy.users import NewUser

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(help="Login name: lower-case letters, digits, '.', '_', '-'."),
    email: str | None = typer.Option(None, "--email"),
    admin: bool = typer.Option(False, "--admin", help="Make the user an admin."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a user and print their first API key once (admin)."""

    async def go() -> NewUser:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.users.create(me, name, email=email, is_admin=admin)

    created = run(go())
    if as_json:
        print_json(
            {
                "user": created.user.model_dump(mode="json"),
                "api_key": created.api_key.model_dump(mode="json"),
            }
        )
        return
    err.print(f"created user {created.user.name}; their API key (shown once):")
    out.print(created.api_key.secret)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List users (admin)."""

    async def go() -> list[User]:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.users.list_all(me)

    found = run(go())
    if as_json:
        print_json(found)
        return
    print_table(
        "users",
        ["name", "id", "admin", "email", "created"],
        [(u.name, u.id, "yes" if u.is_admin else "", u.email, u.created_at) for u in found],
    )
