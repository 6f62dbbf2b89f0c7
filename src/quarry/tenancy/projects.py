"""Projects and their members. Every access goes through ``resolve``.

A caller without access to a project is told it does not exist (404), exactly as for a project
that really does not exist, so project ids and names do not leak. A caller who can see the
project but lacks the role for an action gets 403.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import errors as pg_errors

from quarry.db.database import Conn, Database
from quarry.errors import (
    Forbidden,
    InvalidInput,
    InvitationNotFound,
    LastOwner,
    ProjectNameTaken,
    ProjectNotFound,
    UserNotFound,
)
from quarry.ingest.blobs import BlobStore
from quarry.tenancy.models import (
    SLUG,
    Invitation,
    Member,
    Principal,
    Project,
    Role,
    is_uuid,
)
from quarry.tenancy.users import Users


def validate_name(name: str) -> str:
    if not SLUG.fullmatch(name) or is_uuid(name):
        raise InvalidInput(
            "name must be a slug: 1-63 lower-case letters, digits or '-', starting with a "
            "letter or digit, and not shaped like a UUID",
            field="name",
        )
    return name


class Projects:
    def __init__(self, db: Database, users: Users, blobs: BlobStore) -> None:
        self.db = db
        self.users = users
        self.blobs = blobs

    async def create(
        self, actor: Principal, name: str, description: str = "", analyzer: str = "english"
    ) -> Project:
        validate_name(name)
        await self._check_analyzer(analyzer)
        async with self.db.transaction() as conn:
            try:
                row = await self.db.fetch_one(
                    "projects.create",
                    conn,
                    name=name,
                    description=description,
                    created_by=actor.user_id,
                    analyzer=analyzer,
                )
            except pg_errors.UniqueViolation:
                raise ProjectNameTaken(f"a project named {name!r} already exists") from None
            assert row is not None
            await self.db.fetch_one(
                "memberships.upsert",
                conn,
                project_id=row["id"],
                user_id=actor.user_id,
                role=Role.owner.value,
            )
        return Project(**row, role=Role.owner)

    async def list_for(self, actor: Principal) -> list[Project]:
        """The caller's projects; an admin sees every project."""
        query = "projects.list_all" if actor.is_admin else "projects.list_for_user"
        rows = await self.db.fetch_all(query, user_id=actor.user_id)
        return [Project(**row) for row in rows]

    async def resolve(
        self, actor: Principal, ref: str, need: Role = Role.viewer, conn: Conn | None = None
    ) -> Project:
        """The project named by id or name, if the actor holds at least ``need`` in it."""
        row = await self._find(ref, conn)
        if row is None:
            raise ProjectNotFound(f"no project {ref!r}")
        role_row = await self.db.fetch_one(
            "projects.role_of", conn, project_id=row["id"], user_id=actor.user_id
        )
        role = Role(role_row["role"]) if role_row else None
        if role is None and not actor.is_admin:
            raise ProjectNotFound(f"no project {ref!r}")
        effective = Role.owner if actor.is_admin else role
        assert effective is not None
        if not effective.allows(need):
            raise Forbidden(f"this needs the {need.value} role in project {row['name']!r}")
        return Project(**row, role=role)

    async def _find(self, ref: str, conn: Conn | None) -> dict[str, Any] | None:
        if is_uuid(ref):
            return await self.db.fetch_one("projects.get_by_id", conn, project_id=uuid.UUID(ref))
        return await self.db.fetch_one("projects.get_by_name", conn, name=ref)

    async def update(
        self,
        actor: Principal,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        analyzer: str | None = None,
    ) -> Project:
        """Rename, describe, or change the analyzer. A new analyzer re-analyses every chunk of
        the project in the same transaction (BM25 must compare query and chunks analysed the
        same way); documents being written meanwhile wait for it, and it for them."""
        project = await self.resolve(actor, ref, Role.owner)
        if name is not None:
            validate_name(name)
        if analyzer is not None:
            await self._check_analyzer(analyzer)
        async with self.db.transaction() as conn:
            # The analyzer to compare with is the one this update replaces, read under the
            # row's lock: two updates at once would otherwise both compare with the one before
            # them, and the second could skip re-analysing what the first changed.
            before = await self.db.fetch_one(
                "projects.lock_for_update", conn, project_id=project.id
            )
            if before is None:
                raise ProjectNotFound(f"no project {ref!r}")
            # The role again under the lock, which every change of members takes too: an
            # owner demoted meanwhile is refused.
            project = await self.resolve(actor, str(project.id), Role.owner, conn)
            try:
                row = await self.db.fetch_one(
                    "projects.update",
                    conn,
                    project_id=project.id,
                    name=name,
                    description=description,
                    analyzer=analyzer,
                )
            except pg_errors.UniqueViolation:
                raise ProjectNameTaken(f"a project named {name!r} already exists") from None
            assert row is not None  # the row is locked
            if analyzer is not None and analyzer != before["analyzer"]:
                # Not beside a pack of this project (it moves the postings about to go).
                await self.db.execute("postings.lock_project", conn, project_id=project.id)
                # Every document's totals change below: their rows are locked first, in id
                # order as every other locker of several documents does, or the update's scan
                # order and a submission's could each hold what the other waits for.
                await self.db.execute("projects.lock_documents", conn, project_id=project.id)
                await self.db.execute("postings.unpack", conn, project_id=project.id)
                await self.db.execute("chunks.drop_postings", conn, project_id=project.id)
                await self.db.fetch_one(
                    "chunks.reanalyse", conn, project_id=project.id, analyzer=analyzer
                )
                await self.db.execute("chunks.restat", conn, project_id=project.id)
        return Project(**row, role=project.role)

    async def _check_analyzer(self, analyzer: str) -> None:
        row = await self.db.fetch_one("projects.analyzer_exists", analyzer=analyzer)
        if row is None or not row["found"]:
            raise InvalidInput(
                f"no text search configuration named {analyzer!r} "
                "(for example: english, simple, german, french)",
                field="analyzer",
            )

    async def delete(self, actor: Principal, ref: str) -> Project:
        async with self.db.transaction() as conn:
            project = await self._locked(actor, ref, Role.owner, conn)
            await self.db.execute("projects.delete", conn, project_id=project.id)
        await self.blobs.delete_project(project.id)  # the raw bytes go with the rows
        await self.db.execute("projects.forget_deleted", project_id=project.id)
        return project

    async def members(self, actor: Principal, ref: str) -> list[Member]:
        """Members, then users invited and not yet members (``pending``)."""
        project = await self.resolve(actor, ref)
        rows = await self.db.fetch_all("memberships.list", project_id=project.id)
        invited = await self.db.fetch_all("memberships.list_invited", project_id=project.id)
        return [Member(**row) for row in [*rows, *invited]]

    async def set_member(self, actor: Principal, ref: str, user_ref: str, role: Role) -> Member:
        """Change a member's role, or add a user: an admin adds at once, an owner invites,
        and the user becomes a member by accepting (``accept``). Without that consent anyone
        could make a user a member of a project named as one of theirs was (a name freed by
        a rename or a delete), and the user's requests by that name would land there."""
        async with self.db.transaction() as conn:
            project = await self._locked(actor, ref, Role.owner, conn)
            user = await self._user(user_ref)
            member = await self.db.fetch_one(
                "projects.role_of", conn, project_id=project.id, user_id=user.id
            )
            if member is None and not actor.is_admin and user.id != actor.user_id:
                row = await self.db.fetch_one(
                    "memberships.invite",
                    conn,
                    project_id=project.id,
                    user_id=user.id,
                    role=role.value,
                    invited_by=actor.user_id,
                )
                assert row is not None
                return Member(**row, user_name=user.name, pending=True)
            row = await self.db.fetch_one(
                "memberships.upsert", conn, project_id=project.id, user_id=user.id, role=role.value
            )
            await self.db.execute(
                "memberships.uninvite", conn, project_id=project.id, user_id=user.id
            )
            await self._keep_an_owner(conn, project.id)
        assert row is not None
        return Member(**row, user_name=user.name)

    async def invitations(self, actor: Principal) -> list[Invitation]:
        rows = await self.db.fetch_all("memberships.invitations_for", user_id=actor.user_id)
        return [Invitation(**row) for row in rows]

    async def accept(self, actor: Principal, project_id: uuid.UUID) -> Member:
        """Become a member of a project one was invited to (by its id: a name could be
        another project's by the time one answers)."""
        async with self.db.transaction() as conn:
            # The project's lock first, as every change of members takes it: taking the
            # invitation first, then the project (the membership's key) would deadlock with
            # an owner removing or re-inviting this user at the same moment.
            await self.db.fetch_one("memberships.lock_project_members", conn, project_id=project_id)
            taken = await self.db.fetch_one(
                "memberships.uninvite", conn, project_id=project_id, user_id=actor.user_id
            )
            if taken is None:
                raise InvitationNotFound(f"no invitation to project {project_id}")
            row = await self.db.fetch_one(
                "memberships.upsert",
                conn,
                project_id=project_id,
                user_id=actor.user_id,
                role=taken["role"],
            )
        assert row is not None
        return Member(**row, user_name=actor.user_name)

    async def decline(self, actor: Principal, project_id: uuid.UUID) -> None:
        declined = await self.db.execute(
            "memberships.uninvite", project_id=project_id, user_id=actor.user_id
        )
        if not declined:
            raise InvitationNotFound(f"no invitation to project {project_id}")

    async def remove_member(self, actor: Principal, ref: str, user_ref: str) -> None:
        """Owners remove anyone; any member may remove themselves. A project keeps an owner."""
        async with self.db.transaction() as conn:
            # The project and the right to remove someone else come before the user is looked
            # up, so that only an owner learns whether a name is a user.
            itself = (
                uuid.UUID(user_ref) == actor.user_id
                if is_uuid(user_ref)
                else user_ref == actor.user_name
            )
            project = await self._locked(actor, ref, Role.viewer if itself else Role.owner, conn)
            user = await self._user(user_ref)
            removed = await self.db.execute(
                "memberships.delete", conn, project_id=project.id, user_id=user.id
            )
            removed += await self.db.execute(  # an invitation is withdrawn the same way
                "memberships.uninvite", conn, project_id=project.id, user_id=user.id
            )
            if not removed:
                raise UserNotFound(f"{user.name!r} is not a member of {project.name!r}")
            await self._keep_an_owner(conn, project.id)

    async def _locked(self, actor: Principal, ref: str, need: Role, conn: Conn) -> Project:
        """The project, its members locked for this transaction, if the actor holds ``need``
        once the lock is held: an owner demoted by a change that held the lock meanwhile is
        refused, not let through on the role read before it."""
        project = await self.resolve(actor, ref, need, conn)
        await self.db.fetch_one("memberships.lock_project_members", conn, project_id=project.id)
        return await self.resolve(actor, str(project.id), need, conn)

    async def _user(self, ref: str) -> Any:
        user = await self.users.find(ref)
        if user is None:
            raise UserNotFound(f"no user {ref!r}")
        return user

    async def _keep_an_owner(self, conn: Conn, project_id: uuid.UUID) -> None:
        row = await self.db.fetch_one("memberships.count_owners", conn, project_id=project_id)
        if row is None or row["n"] == 0:
            raise LastOwner("a project must keep at least one owner")
