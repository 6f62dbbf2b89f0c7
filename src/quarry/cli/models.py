"""quarry models, quarry usage."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from quarry.cli.common import JSON_OPTION, acting, fail, out, print_table, run, settings_from
from quarry.db.database import StartupError
from quarry.gateway.accounting import UsageRow, usage_by_model_day
from quarry.gateway.gateway import build_gateway
from quarry.gateway.registry import ProviderConfigError

PROBE_TIMEOUT = 10.0


def register(app: typer.Typer) -> None:
    app.command(name="models")(models)
    app.command(name="usage")(usage)


def models(
    ctx: typer.Context,
    probe: bool = typer.Option(
        True, "--probe/--no-probe", help="Check that each model can be reached."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the roles, their chains of models, and whether each model is reachable."""
    settings = settings_from(ctx)

    async def go() -> list[dict[str, Any]]:
        try:
            gateway = build_gateway(settings, None)
        except ProviderConfigError as exc:
            raise StartupError(str(exc)) from None
        try:
            reasons: dict[str, str | None] = {}
            if probe:
                names = sorted(gateway.models)
                found = await asyncio.gather(*(_probe(gateway.models[n]) for n in names))
                reasons = dict(zip(names, found, strict=True))
            rows = []
            for role, chain in sorted(gateway.roles.items()):
                for position, name in enumerate(chain, start=1):
                    provider = gateway.models[name]
                    rows.append(
                        {
                            "role": role,
                            "position": position,
                            "model": name,
                            "provider": provider.config.provider,
                            "provider_model": provider.provider_model,
                            "reachable": None if not probe else reasons[name] is None,
                            "problem": reasons.get(name),
                        }
                    )
            return rows
        finally:
            await gateway.aclose()

    rows = run(go())
    if as_json:
        out.print_json(data=rows)
        return
    print_table(
        "roles and their models (first serves, the next takes over on failure)",
        ["role", "#", "model", "provider", "provider model", "reachable"],
        [
            (
                r["role"],
                r["position"],
                r["model"],
                r["provider"],
                r["provider_model"],
                "not checked"
                if r["reachable"] is None
                else "yes"
                if r["reachable"]
                else f"no: {r['problem']}",
            )
            for r in rows
        ],
    )


async def _probe(provider: Any) -> str | None:
    try:
        return await asyncio.wait_for(provider.probe(), PROBE_TIMEOUT)
    except TimeoutError:
        return f"no answer in {PROBE_TIMEOUT:.0f} s"


def usage(
    ctx: typer.Context,
    project: str | None = typer.Option(
        None, "--project", "-p", help="A project's name or id (admins may leave it out: all)."
    ),
    days: int = typer.Option(30, "--days", min=1, max=3660, help="How many days back."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Model tokens and cost by model and day."""
    settings = settings_from(ctx)

    async def go() -> list[UsageRow]:
        async with acting(settings) as (rt, me):
            project_id = None
            if project is not None:
                project_id = (await rt.projects.resolve(me, project)).id
            elif not me.is_admin:
                fail("name a project with --project (only admins see every project's usage)")
            since = datetime.now(UTC) - timedelta(days=days)
            return await usage_by_model_day(rt.db, project_id=project_id, since=since)

    rows = run(go())
    if as_json:
        out.print_json(data=[{**asdict(r), "day": r.day.isoformat()} for r in rows])
        return
    table = [
        (
            r.day.isoformat(),
            r.model,
            r.calls,
            r.errors,
            r.cached,
            r.input_tokens,
            r.output_tokens,
            _money(r.cost, r.unpriced),
        )
        for r in rows
    ]
    known = [r.cost for r in rows if r.cost is not None]
    unpriced = sum(r.unpriced for r in rows)
    table.append(
        (
            "total",
            "",
            sum(r.calls for r in rows),
            sum(r.errors for r in rows),
            sum(r.cached for r in rows),
            sum(r.input_tokens for r in rows),
            sum(r.output_tokens for r in rows),
            _money(sum(known) if known else None, unpriced),
        )
    )
    print_table(
        f"model usage, last {days} days" + (f", project {project}" if project else ""),
        [
            "day (UTC)",
            "model",
            "calls",
            "errors",
            "cached",
            "input tokens",
            "output tokens",
            "cost (USD)",
        ],
        table,
    )


def _money(cost: float | None, unpriced: int) -> str:
    shown = "unknown" if cost is None else f"{cost:.6f}"
    return shown + (f" ({unpriced} calls unpriced)" if unpriced and cost is not None else "")
