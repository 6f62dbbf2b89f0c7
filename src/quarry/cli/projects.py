"""quarry projects ..."""

from __future__ import annotations

import uuid
from typing import Any

import typer

from quarry.cli.common import JSON_OPTION, acting, out, print_json, print_table, run, settings_from
from quarry.tenancy.models import Invitation, Member, Project, Role

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(help="A unique slug: lower-case letters, digits and '-'."),
    description: str = typer.Option("", "--description", "-d"),
    analyzer: str = typer.Option(
        "english", "--analyzer", help="Text search configuration for BM25 (english, simple, ...)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a project; you become its owner."""

    async def go() -> Project:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.create(me, name, description, analyzer)

    project = run(go())
    if as_json:
        print_json(project)
    else:
        out.print(f"created project {project.name} ({project.id})")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List your projects."""

    async def go() -> list[Project]:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.list_for(me)

    projects = run(go())
    if as_json:
        print_json(projects)
        return
    rows = [(p.name, p.id, p.role.value if p.role else "-", p.description) for p in projects]
    print_table("projects", ["name", "id", "role", "description"], rows)


@app.command("show")
def show(
    ctx: typer.Context,
    project: str = typer.Argument(help="The project's name or id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one project."""

    async def go() -> dict[str, Any]:
        async with acting(settings_from(ctx)) as (rt, me):
            found = await rt.projects.resolve(me, project)
            counts = await rt.documents.counts(found.id)
            return {**found.model_dump(mode="json"), **counts.model_dump(mode="json")}

    shown = run(go())
    if as_json:
        print_json(shown)
        return
    for field, value in shown.items():
        out.print(f"{field:20} {value}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    project: str = typer.Argument(help="The project's name or id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a project and everything in it (owner)."""
    if not yes:
        typer.confirm(f"Delete project {project} and everything in it?", abort=True)

    async def go() -> Project:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.delete(me, project)

    out.print(f"deleted project {run(go()).name}")


@app.command("members")
def members(
    ctx: typer.Context,
    project: str = typer.Argument(help="The project's name or id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a project's members."""

    async def go() -> list[Member]:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.members(me, project)

    found = run(go())
    if as_json:
        print_json(found)
        return
    print_table(
        f"members of {project}",
        ["user", "user id", "role", "since"],
        [
            (
                m.user_name,
                m.user_id,
                f"{m.role.value} (invited)" if m.pending else m.role.value,
                m.created_at,
            )
            for m in found
        ],
    )


@app.command("add-member")
def add_member(
    ctx: typer.Context,
    project: str = typer.Argument(help="The project's name or id."),
    user: str = typer.Argument(help="The user's name or id."),
    role: Role = typer.Option(Role.viewer, "--role", help="viewer, editor or owner."),
) -> None:
    """Change a member's role, or invite a user (owner; an admin adds them at once)."""

    async def go() -> Member:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.set_member(me, project, user, role)

    member = run(go())
    if member.pending:
        out.print(
            f"invited {member.user_name} to {project} as {member.role.value}: they become a "
            f"member with `quarry projects accept {member.project_id}`"
        )
        return
    out.print(f"{member.user_name} is now {member.role.value} of {project}")


@app.command("remove-member")
def remove_member(
    ctx: typer.Context,
    project: str = typer.Argument(help="The project's name or id."),
    user: str = typer.Argument(help="The user's name or id."),
) -> None:
    """Remove a member (owner, or yourself)."""

    async def go() -> None:
        async with acting(settings_from(ctx)) as (rt, me):
            await rt.projects.remove_member(me, project, user)

    run(go())
    out.print(f"removed {user} from {project}")


@app.command("invitations")
def invitations(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Projects you are invited to and have not yet answered."""

    async def go() -> list[Invitation]:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.invitations(me)

    found = run(go())
    if as_json:
        print_json(found)
        return
    print_table(
        "invitations",
        ["project", "project id", "role", "invited by", "since"],
        [(i.project_name, i.project_id, i.role.value, i.invited_by, i.created_at) for i in found],
    )


@app.command("accept")
def accept(
    ctx: typer.Context,
    project_id: uuid.UUID = typer.Argument(help="The project's id, as `invitations` lists it."),
) -> None:
    """Accept an invitation: become a member of the project."""

    async def go() -> Member:
        async with acting(settings_from(ctx)) as (rt, me):
            return await rt.projects.accept(me, project_id)

    member = run(go())
    out.print(f"you are now {member.role.value} of project {member.project_id}")


@app.command("decline")
def decline(
    ctx: typer.Context,
    project_id: uuid.UUID = typer.Argument(help="The project's id, as `invitations` lists it."),
) -> None:
    """Decline an invitation."""

    async def go() -> None:
        async with acting(settings_from(ctx)) as (rt, me):
            await rt.projects.decline(me, project_id)

    run(go())
    out.print(f"declined the invitation to project {project_id}")
