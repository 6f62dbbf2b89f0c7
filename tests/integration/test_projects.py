"""Projects, members and isolation over the real app."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import psycopg

from quarry.tenancy.users import NewUser
from tests.conftest import bearer


async def _user(client: httpx.AsyncClient, admin: NewUser, name: str) -> str:
    response = await client.post(
        "/users", json={"name": name}, headers=bearer(admin.api_key.secret)
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["api_key"]["secret"]
    return secret


async def test_project_crud_by_id_and_name(client: httpx.AsyncClient, admin: NewUser) -> None:
    key = bearer(await _user(client, admin, "alice"))
    created = await client.post("/projects", json={"name": "docs", "description": "d"}, headers=key)
    assert created.status_code == 201
    project = created.json()
    assert project["role"] == "owner"
    by_id = await client.get(f"/projects/{project['id']}", headers=key)
    by_name = await client.get("/projects/docs", headers=key)
    assert by_id.json() == by_name.json()
    assert by_id.json() == {
        **project,
        "document_count": 0,
        "chunk_count": 0,
        "documents_by_status": {"pending": 0, "indexing": 0, "complete": 0, "failed": 0},
    }
    renamed = await client.patch("/projects/docs", json={"name": "handbook"}, headers=key)
    assert renamed.json()["name"] == "handbook"
    assert (await client.get("/projects/docs", headers=key)).status_code == 404
    assert [p["name"] for p in (await client.get("/projects", headers=key)).json()] == ["handbook"]
    assert (await client.delete("/projects/handbook", headers=key)).status_code == 204
    assert (await client.get(f"/projects/{project['id']}", headers=key)).status_code == 404


async def test_names_are_unique_and_validated(client: httpx.AsyncClient, admin: NewUser) -> None:
    key = bearer(admin.api_key.secret)
    assert (await client.post("/projects", json={"name": "a"}, headers=key)).status_code == 201
    taken = await client.post("/projects", json={"name": "a"}, headers=key)
    assert taken.status_code == 409
    assert taken.json()["code"] == "project_name_taken"
    bad = await client.post("/projects", json={"name": "Not A Slug"}, headers=key)
    assert bad.status_code == 422
    assert bad.json()["field"] == "name"
    missing = await client.post("/projects", json={}, headers=key)
    assert missing.status_code == 422
    assert missing.json()["code"] == "validation_error"
    assert missing.json()["errors"][0]["field"] == "name"
    not_json = await client.post(
        "/projects", content=b"{oops", headers={**key, "content-type": "application/json"}
    )
    assert not_json.status_code == 422


async def test_another_users_project_is_not_found(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    alice = bearer(await _user(client, admin, "alice"))
    bob = bearer(await _user(client, admin, "bob"))
    project = (await client.post("/projects", json={"name": "secret"}, headers=alice)).json()
    for path in [f"/projects/{project['id']}", "/projects/secret", "/projects/secret/members"]:
        response = await client.get(path, headers=bob)
        assert response.status_code == 404, path
        assert response.json()["code"] == "project_not_found"
    # Exactly what a project that does not exist looks like (apart from the id in the text).
    ghost = await client.get(f"/projects/{uuid.uuid4()}", headers=bob)
    assert ghost.json()["code"] == "project_not_found"
    for method, path in [("DELETE", "/projects/secret"), ("PATCH", "/projects/secret")]:
        response = await client.request(method, path, json={}, headers=bob)
        assert response.status_code == 404
    assert (await client.get("/projects", headers=bob)).json() == []
    # the admin sees everything
    names = [
        p["name"]
        for p in (await client.get("/projects", headers=bearer(admin.api_key.secret))).json()
    ]
    assert names == ["secret"]


async def test_roles_decide_what_members_may_do(client: httpx.AsyncClient, admin: NewUser) -> None:
    owner = bearer(await _user(client, admin, "owner1"))
    await _user(client, admin, "viewer1")
    project = (await client.post("/projects", json={"name": "team"}, headers=owner)).json()
    added = await client.put(
        "/projects/team/members/viewer1", json={"role": "viewer"}, headers=owner
    )
    assert added.status_code == 200
    assert added.json()["role"] == "viewer"
    assert added.json()["pending"]  # invited: a member once they accept
    viewer_key = (
        await client.post("/keys", json={"user": "viewer1"}, headers=bearer(admin.api_key.secret))
    ).json()["secret"]
    viewer = bearer(viewer_key)
    accepted = await client.post(f"/invitations/{project['id']}", headers=viewer)
    assert accepted.status_code == 200, accepted.text
    assert (await client.get("/projects/team", headers=viewer)).json()["role"] == "viewer"
    forbidden = await client.delete("/projects/team", headers=viewer)
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"
    echo = await client.post("/projects/team/jobs/echo", json={"message": "x"}, headers=viewer)
    assert echo.status_code == 403
    members = await client.get("/projects/team/members", headers=viewer)
    assert sorted((m["user_name"], m["role"]) for m in members.json()) == [
        ("owner1", "owner"),
        ("viewer1", "viewer"),
    ]
    assert project["id"] == members.json()[0]["project_id"]


async def test_a_project_keeps_an_owner(client: httpx.AsyncClient, admin: NewUser) -> None:
    owner = bearer(await _user(client, admin, "solo"))
    await client.post("/projects", json={"name": "p"}, headers=owner)
    demote = await client.put("/projects/p/members/solo", json={"role": "editor"}, headers=owner)
    assert demote.status_code == 409
    assert demote.json()["code"] == "last_owner"
    leave = await client.delete("/projects/p/members/solo", headers=owner)
    assert leave.status_code == 409
    assert (await client.get("/projects/p", headers=owner)).json()["role"] == "owner"


async def test_unknown_member_and_bad_role(client: httpx.AsyncClient, admin: NewUser) -> None:
    key = bearer(admin.api_key.secret)
    await client.post("/projects", json={"name": "p"}, headers=key)
    nobody = await client.put("/projects/p/members/nobody", json={"role": "viewer"}, headers=key)
    assert nobody.status_code == 404
    assert nobody.json()["code"] == "user_not_found"
    bad = await client.put("/projects/p/members/admin", json={"role": "god"}, headers=key)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "role"


async def test_only_admins_manage_users(client: httpx.AsyncClient, admin: NewUser) -> None:
    alice = bearer(await _user(client, admin, "alice"))
    refused = await client.post("/users", json={"name": "mallory"}, headers=alice)
    assert refused.status_code == 403
    assert refused.json()["code"] == "admin_required"
    assert (await client.get("/users", headers=alice)).status_code == 403
    again = await client.post(
        "/users", json={"name": "alice"}, headers=bearer(admin.api_key.secret)
    )
    assert again.status_code == 409
    assert again.json()["code"] == "user_name_taken"
    me = await client.get("/me", headers=alice)
    assert me.json()["user"]["name"] == "alice"
    assert (await client.get("/users/admin", headers=alice)).status_code == 404


async def test_removing_a_member_tells_no_outsider_whether_a_user_exists(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    alice = bearer(await _user(client, admin, "alice"))
    bob = bearer(await _user(client, admin, "bob"))
    await client.post("/projects", json={"name": "hers"}, headers=alice)
    his = (await client.post("/projects", json={"name": "his"}, headers=bob)).json()
    await client.put("/projects/his/members/alice", json={"role": "viewer"}, headers=bob)
    assert (await client.post(f"/invitations/{his['id']}", headers=alice)).is_success
    # Not a member of "hers": the same 404 for a user that exists and one that does not.
    for name in ("alice", "nobody"):
        outside = await client.delete(f"/projects/hers/members/{name}", headers=bob)
        assert outside.status_code == 404
        assert outside.json()["code"] == "project_not_found"
    # A viewer of "his" may remove only herself: a 403 whether the other user exists or not.
    for name in ("bob", "nobody"):
        other = await client.delete(f"/projects/his/members/{name}", headers=alice)
        assert other.status_code == 403, other.text
        assert other.json()["code"] == "forbidden"
    me = (await client.get("/me", headers=alice)).json()["user"]["id"]
    left = await client.delete(f"/projects/his/members/{me.upper()}", headers=alice)
    assert left.status_code == 204, left.text
    # The owner may learn it: removing someone who is no user is a 404 saying so.
    unknown = await client.delete("/projects/his/members/nobody", headers=bob)
    assert unknown.json()["code"] == "user_not_found"


async def test_a_write_whose_project_is_deleted_meanwhile_is_a_404(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    key = bearer(admin.api_key.secret)
    await client.post("/projects", json={"name": "fleeting"}, headers=key)
    # The deletion lands between the request finding the project and its write: a trigger
    # deletes the project just before the conversation's row goes in (and is undone with the
    # failed statement, so the project stays; what is tested is the answer).
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION delete_its_project() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN DELETE FROM projects WHERE id = NEW.project_id; RETURN NEW; END $$;
            CREATE TRIGGER meanwhile BEFORE INSERT ON conversations
            FOR EACH ROW EXECUTE FUNCTION delete_its_project();
            """
        )
    answer = await client.post("/projects/fleeting/conversations", json={}, headers=key)
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == "project_not_found"


async def test_a_user_joins_a_project_only_by_accepting_its_invitation(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    """The attack this prevents: Alice renames her project "acme"; Mallory creates a new
    "acme" and adds Alice to it; Alice's scripts, still writing to "acme" by name, would
    have written into Mallory's project."""
    alice = bearer(await _user(client, admin, "alice"))
    mallory = bearer(await _user(client, admin, "mallory"))
    mine = (await client.post("/projects", json={"name": "acme"}, headers=alice)).json()
    await client.patch("/projects/acme", json={"name": "acme-2026"}, headers=alice)
    trap = (await client.post("/projects", json={"name": "acme"}, headers=mallory)).json()
    invited = await client.put(
        "/projects/acme/members/alice", json={"role": "editor"}, headers=mallory
    )
    assert invited.status_code == 200, invited.text
    assert invited.json()["pending"]
    # Until she accepts, "acme" is not hers to see or to write to.
    written = await client.post(
        "/projects/acme/documents/text", json={"text": "secret plans"}, headers=alice
    )
    assert written.status_code == 404
    assert written.json()["code"] == "project_not_found"
    assert [p["name"] for p in (await client.get("/projects", headers=alice)).json()] == [
        "acme-2026"
    ]
    # She sees the invitation, by id, with who sent it.
    (invitation,) = (await client.get("/invitations", headers=alice)).json()
    assert invitation["project_id"] == trap["id"]
    assert (invitation["project_name"], invitation["role"], invitation["invited_by"]) == (
        "acme",
        "editor",
        "mallory",
    )
    members = (await client.get("/projects/acme/members", headers=mallory)).json()
    assert sorted((m["user_name"], m["pending"]) for m in members) == [
        ("alice", True),
        ("mallory", False),
    ]
    # Declined, it is gone; answering twice, or someone else's, is a 404.
    assert (await client.delete(f"/invitations/{trap['id']}", headers=alice)).status_code == 204
    again = await client.delete(f"/invitations/{trap['id']}", headers=alice)
    assert again.json()["code"] == "invitation_not_found"
    assert (await client.post(f"/invitations/{mine['id']}", headers=mallory)).status_code == 404
    assert (await client.get("/invitations", headers=alice)).json() == []

    # Invited again and accepted, she is an editor; an owner's role change needs no consent.
    await client.put("/projects/acme/members/alice", json={"role": "viewer"}, headers=mallory)
    joined = await client.post(f"/invitations/{trap['id']}", headers=alice)
    assert joined.status_code == 200, joined.text
    assert (joined.json()["role"], joined.json()["pending"]) == ("viewer", False)
    promoted = await client.put(
        "/projects/acme/members/alice", json={"role": "editor"}, headers=mallory
    )
    assert (promoted.json()["role"], promoted.json()["pending"]) == ("editor", False)
    # An owner withdraws an invitation as they would remove a member.
    await _user(client, admin, "carol")
    await client.put("/projects/acme/members/carol", json={"role": "viewer"}, headers=mallory)
    withdrawn = await client.delete("/projects/acme/members/carol", headers=mallory)
    assert withdrawn.status_code == 204
    members = (await client.get("/projects/acme/members", headers=mallory)).json()
    assert sorted(m["user_name"] for m in members) == ["alice", "mallory"]
    # An admin adds at once.
    admin_key = bearer(admin.api_key.secret)
    direct = await client.put(
        "/projects/acme/members/carol", json={"role": "viewer"}, headers=admin_key
    )
    assert direct.json()["pending"] is False


async def _demoted_while_waiting(
    url: str,
    project: str,
    user: str,
    request: Callable[[], Awaitable[httpx.Response]],
) -> httpx.Response:
    """``request``'s answer when it starts while another transaction holds the project's lock
    (the one changes of members take) and demotes ``user`` to viewer, committing only once
    the request waits for it."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("SELECT id FROM projects WHERE name = %s FOR UPDATE", (project,))
        await conn.execute(
            "UPDATE memberships SET role = 'viewer' WHERE user_id = "
            "(SELECT id FROM users WHERE name = %s)",
            (user,),
        )
        pending = asyncio.create_task(request())
        await asyncio.sleep(0.5)
        assert not pending.done()  # waiting for the lock
        await conn.commit()
    return await pending


async def test_an_owner_demoted_while_waiting_for_the_members_lock_is_refused(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    key = bearer(admin.api_key.secret)
    b = bearer(await _user(client, admin, "owner-b"))
    await _user(client, admin, "owner-c")
    await client.post("/projects", json={"name": "shared"}, headers=key)
    for name in ("owner-b", "owner-c"):
        added = await client.put(
            f"/projects/shared/members/{name}", json={"role": "owner"}, headers=key
        )
        assert added.status_code == 200, added.text
    # Another request holds the members' lock and demotes B; B's removal of C waits for it.
    refused = await _demoted_while_waiting(
        fresh_database,
        "shared",
        "owner-b",
        lambda: client.delete("/projects/shared/members/owner-c", headers=b),
    )
    assert refused.status_code == 403, refused.text
    members = (await client.get("/projects/shared/members", headers=key)).json()
    assert ("owner-c", "owner") in [(m["user_name"], m["role"]) for m in members]


async def test_an_owner_demoted_meanwhile_neither_renames_nor_deletes(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    key = bearer(admin.api_key.secret)
    b = bearer(await _user(client, admin, "owner-d"))
    await client.post("/projects", json={"name": "kept"}, headers=key)
    added = await client.put("/projects/kept/members/owner-d", json={"role": "owner"}, headers=key)
    assert added.status_code == 200, added.text
    for change in (
        lambda: client.patch("/projects/kept", json={"name": "renamed"}, headers=b),
        lambda: client.delete("/projects/kept", headers=b),
    ):
        refused = await _demoted_while_waiting(fresh_database, "kept", "owner-d", change)
        assert refused.status_code == 403, refused.text
        async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as c:
            await c.execute(
                "UPDATE memberships SET role = 'owner' WHERE user_id = "
                "(SELECT id FROM users WHERE name = 'owner-d')"
            )
    assert (await client.get("/projects/kept", headers=key)).status_code == 200


async def test_accepting_while_an_owner_withdraws_the_invitation_does_not_deadlock(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    owner = bearer(await _user(client, admin, "inviter"))
    alice = bearer(await _user(client, admin, "invitee"))
    project = (await client.post("/projects", json={"name": "guarded"}, headers=owner)).json()
    invited = await client.put(
        "/projects/guarded/members/invitee", json={"role": "viewer"}, headers=owner
    )
    assert invited.json()["pending"]
    # The owner's withdrawal, as remove_member makes it: the members' lock, then the invitation.
    async with await psycopg.AsyncConnection.connect(fresh_database) as conn:
        await conn.execute("SELECT id FROM projects WHERE id = %s FOR UPDATE", (project["id"],))
        accepting = asyncio.create_task(client.post(f"/invitations/{project['id']}", headers=alice))
        await asyncio.sleep(0.5)
        await conn.execute("DELETE FROM invitations WHERE project_id = %s", (project["id"],))
        await conn.commit()
    answer = await accepting
    assert answer.status_code == 404, answer.text  # withdrawn first: nothing to accept
    assert answer.json()["code"] == "invitation_not_found"


async def test_a_user_name_shaped_like_an_id_is_refused(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    # Users are found by id first, then by name: such a name could never be used.
    key = bearer(admin.api_key.secret)
    for name in (str(uuid.uuid4()), uuid.uuid4().hex):
        refused = await client.post("/users", json={"name": name}, headers=key)
        assert refused.status_code == 422, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == ("invalid_input", "name")
    assert (await client.post("/users", json={"name": "abc-123"}, headers=key)).status_code == 201
