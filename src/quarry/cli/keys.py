"""quarry keys ..."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

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
from quarry.tenancy.models import ApiKey, CreatedApiKey

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
    expires_in_days: float | None = typer.Option(
        None, "--expires-in-days", min=0.001, help="Make the key stop working after this long."
    ),
    user: str | None = typer.Option(None, "--user", help="Admins: make the key for this user."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API key; it is printed once."""
    expires_at = expiry(expires_in_days) if expires_in_days is not None else None

    async def go() -> CreatedApiKey:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.users.create_key(me, user=user, name=name, expires_at=expires_at)

    created = run(go())
    if as_json:
        print_json(created)
        return
    err.print(f"created key {created.key.prefix} (shown once; store it now):")
    out.print(created.secret)


def expiry(days: float) -> datetime:
    """The time ``days`` from now, or a usage error (exit 2) naming the option when that is
    not a time: not a number, or past the year 9999, which Python's datetime cannot hold."""
    if not math.isfinite(days):
        raise typer.BadParameter("must be a number of days", param_hint="--expires-in-days")
    try:
        return datetime.now(UTC) + timedelta(days=days)
    except OverflowError:
        raise typer.BadParameter(
            "reaches past the year 9999", param_hint="--expires-in-days"
        ) from None


@app.command("list")
def list_(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="Admins: list this user's keys."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List API keys (never their secrets)."""

    async def go() -> list[ApiKey]:
        async with acting(settings_from(ctx)) as (rt, me):
            owner = await rt.users.get(me, user) if user else None
            return await rt.keys.list_for(owner.id if owner else me.user_id)

    found = run(go())
    if as_json:
        print_json(found)
        return
    rows = [
        (
            k.prefix,
            k.name,
            k.id,
            k.created_at,
            k.expires_at,
            k.last_used_at,
            "revoked" if k.revoked_at else "active",
        )
        for k in found
    ]
    print_table(
        "API keys", ["prefix", "name", "id", "created", "expires", "last used", "state"], rows
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key: str = typer.Argument(help="The key's id or visible prefix (qk_...)."),
) -> None:
    """Revoke an API key; it stops working at once."""

    async def go() -> ApiKey:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.keys.revoke(me, key)

    out.print(f"revoked {run(go()).prefix}")
