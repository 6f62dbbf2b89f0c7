"""API keys over HTTP: every way a key can be wrong is a 401 with its own code."""

from datetime import UTC, datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from quarry.errors import InvalidInput
from quarry.runtime import Runtime
from quarry.tenancy.users import NewUser
from tests.conftest import bearer


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def _problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_missing_key(client: httpx.AsyncClient, admin: NewUser) -> None:
    response = await client.get("/projects")
    await _problem(response, 401, "missing_api_key")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_malformed_keys(client: httpx.AsyncClient, admin: NewUser) -> None:
    secret = admin.api_key.secret
    for header in [
        f"Basic {secret}",
        "Bearer",
        f"Bearer {secret[:-2]}",
        "Bearer not-a-key",
        secret,
    ]:
        response = await client.get("/projects", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] in {"invalid_api_key", "missing_api_key"}


async def test_unknown_key_of_valid_shape(client: httpx.AsyncClient, admin: NewUser) -> None:
    secret = admin.api_key.secret
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    await _problem(await client.get("/projects", headers=bearer(forged)), 401, "invalid_api_key")


async def test_expired_key(client: httpx.AsyncClient, runtime: Runtime, admin: NewUser) -> None:
    created = await runtime.keys.create(
        admin.user.id, name="short", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    async with runtime.db.pool.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
            (created.key.id,),
        )
    response = await client.get("/projects", headers=bearer(created.secret))
    await _problem(response, 401, "api_key_expired")


async def test_revoked_key(client: httpx.AsyncClient, admin: NewUser) -> None:
    made = await client.post("/keys", json={"name": "temp"}, headers=bearer(admin.api_key.secret))
    assert made.status_code == 201
    secret = made.json()["secret"]
    assert (await client.get("/me", headers=bearer(secret))).status_code == 200
    revoked = await client.delete(f"/keys/{made.json()['key']['prefix']}", headers=bearer(secret))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    await _problem(await client.get("/me", headers=bearer(secret)), 401, "api_key_revoked")
    # the admin's own key is untouched
    assert (await client.get("/me", headers=bearer(admin.api_key.secret))).status_code == 200


async def test_keys_are_stored_hashed_and_listed_without_secrets(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    secret = admin.api_key.secret
    listed = await client.get("/keys", headers=bearer(secret))
    assert listed.status_code == 200
    assert [k["prefix"] for k in listed.json()] == [admin.api_key.key.prefix]
    assert secret not in listed.text
    assert listed.json()[0]["last_used_at"] is not None
    with psycopg.connect(fresh_database) as conn:
        dump = conn.execute("SELECT row_to_json(k)::text FROM api_keys k").fetchall()
    assert all(secret not in row[0] for row in dump)


async def test_past_expiry_is_refused(client: httpx.AsyncClient, admin: NewUser) -> None:
    response = await client.post(
        "/keys",
        json={"expires_at": "2000-01-01T00:00:00Z"},
        headers=bearer(admin.api_key.secret),
    )
    body = await _problem(response, 422, "invalid_input")
    assert body["field"] == "expires_at"


async def test_expiry_timestamps_postgres_or_python_cannot_hold_are_refused(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    """Past year 9999 in UTC Postgres would store the expiry and Python never read it back
    (the key list answered 500 from then on); without a zone its meaning is a guess."""
    key = bearer(admin.api_key.secret)
    for expiry, message in [
        ("9999-12-31T23:59:59-01:00", "between the years 1 and 9999"),
        ("2100-01-01T00:00:00", "time zone"),
    ]:
        response = await client.post("/keys", json={"expires_at": expiry}, headers=key)
        body = await _problem(response, 422, "validation_error")
        assert body["errors"][0]["field"] == "expires_at"  # type: ignore[index]
        assert message in body["errors"][0]["message"]  # type: ignore[index]
    listed = await client.get("/keys", headers=key)
    assert listed.status_code == 200
    assert [k["prefix"] for k in listed.json()] == [admin.api_key.key.prefix]  # none made


async def test_the_key_service_holds_every_caller_to_the_same_expiry_rule(
    runtime: Runtime, admin: NewUser
) -> None:
    far_west = timezone(-timedelta(hours=1))
    for expiry, message in [
        (datetime(9999, 12, 31, 23, 59, tzinfo=far_west), "between the years 1 and 9999"),
        (datetime(2100, 1, 1), "time zone"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            await runtime.keys.create(admin.user.id, expires_at=expiry)


async def test_expiry_with_any_iso_offset_is_kept_in_utc(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    """ISO 8601 allows offsets up to 23:59, Postgres reads them up to 15:59: the API takes
    the time into UTC, so the same instant is stored."""
    response = await client.post(
        "/keys",
        json={"expires_at": "2100-01-01T00:00:00-23:20"},
        headers=bearer(admin.api_key.secret),
    )
    assert response.status_code == 201, response.text
    assert response.json()["key"]["expires_at"] == "2100-01-01T23:20:00Z"


async def test_a_body_that_is_not_json_is_a_422_whatever_its_bytes(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    json_type = {**bearer(admin.api_key.secret), "content-type": "application/json"}
    for body, reason in (
        (b'{"name": ', "not JSON"),
        (b"\xff\xfe\xfd", "not JSON"),  # not even UTF-8
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),  # past the parser's depth
        (b'{"name": ' + b"9" * 5000 + b"}", "4300 digits"),  # past Python's int digits
    ):
        response = await client.post("/projects", content=body, headers=json_type)
        problem = await _problem(response, 422, "validation_error")
        assert problem["errors"][0]["field"] == "body"  # type: ignore[index]
        assert reason in problem["errors"][0]["message"]  # type: ignore[index]


async def test_a_nul_in_the_url_is_a_422_naming_where(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    """Path and query values reach SQL, and Postgres' text holds no NUL (it was a 500)."""
    key = bearer(admin.api_key.secret)
    for method, url, where in [
        ("GET", "/projects/a%00b", "path"),
        ("GET", "/projects/a%00b/documents", "path"),
        ("GET", "/users/a%00b", "path"),
        ("DELETE", "/keys/a%00b", "path"),
        ("GET", "/keys?user=a%00b", "query.user"),
    ]:
        response = await client.request(method, url, headers=key)
        problem = await _problem(response, 422, "validation_error")
        assert problem["errors"] == [{"field": where, "message": "must not contain NUL (%00)"}]
        assert response.headers["x-request-id"] == problem["request_id"]
    assert (await client.get("/keys", params={"user": "admin"}, headers=key)).status_code == 200


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    mine = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made = await client.get("/health", headers={"X-Request-ID": "bad id\twith junk"})
    assert made.headers["x-request-id"] != "bad id\twith junk"
    assert len(made.headers["x-request-id"]) == 32


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    await _problem(await client.get("/no/such/route"), 404, "not_found")


async def test_a_method_a_route_lacks_is_a_405_saying_which_it_has(
    client: httpx.AsyncClient,
) -> None:
    """RFC 9110 wants every method of the path in Allow, also where each has its own route."""
    response = await client.request("TRACE", "/health")
    await _problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"
    response = await client.request("PUT", "/keys")
    await _problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    response = await client.request("POST", "/projects/p/documents/d")
    assert response.headers["allow"] == "DELETE, GET, PATCH"


async def test_unexpected_failure_is_a_500_problem_with_the_request_id(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("DROP TABLE memberships CASCADE")  # break the database under the app
    response = await client.get(
        "/projects", headers={**bearer(admin.api_key.secret), "X-Request-ID": "broken-1"}
    )
    body = await _problem(response, 500, "internal_error")
    assert body["request_id"] == "broken-1"
    assert "memberships" not in response.text  # internals stay in the logs


async def test_openapi_documents_auth_and_problems(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    get_project = spec["paths"]["/projects/{project}"]["get"]
    assert "404" in get_project["responses"]
    assert "errors" in spec["components"]["schemas"]["Problem"]["properties"]
    # Every error is described as it is sent: a Problem, as application/problem+json (but
    # /ready's 503, which is its readiness report).
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in spec["paths"].items():
        if path == "/ready":
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response.get("content") == problem, (method, path, status)


async def test_openapi_documents_answers_streams_and_the_openai_face(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    send = paths["/projects/{project}/conversations/{conversation}/messages"]["post"]
    assert set(send["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    for event in ("`start`", "`result`", "`llm_chunk`", "`complete`", "`error`"):
        assert event in send["description"]
    assert {"get", "delete"} <= set(paths["/projects/{project}/conversations/{conversation}"])
    completions = paths["/v1/chat/completions"]["post"]
    assert "text/event-stream" in completions["responses"]["200"]["content"]
    assert "quarry" in spec["components"]["schemas"]["ChatCompletion"]["properties"]
    assert "get" in paths["/v1/models"]


async def test_a_key_cannot_make_a_key_or_a_user_that_outlives_it(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    admin_key = bearer(admin.api_key.secret)
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    made = await client.post(
        "/keys", json={"name": "hour", "expires_at": soon.isoformat()}, headers=admin_key
    )
    assert made.status_code == 201, made.text
    short = bearer(made.json()["secret"])

    # Asked for no expiry, a key made with it expires with it.
    child = await client.post("/keys", json={"name": "child"}, headers=short)
    assert child.status_code == 201, child.text
    assert datetime.fromisoformat(child.json()["key"]["expires_at"]) == soon
    # Asked for a later one, refused; an earlier one is fine.
    later = (soon + timedelta(days=365)).isoformat()
    refused = await client.post("/keys", json={"expires_at": later}, headers=short)
    body = await _problem(refused, 422, "invalid_input")
    assert body["field"] == "expires_at"
    earlier = (soon - timedelta(minutes=30)).isoformat()
    assert (await client.post("/keys", json={"expires_at": earlier}, headers=short)).is_success
    # A user made with it gets a first key that expires with it too.
    user = await client.post("/users", json={"name": "temp"}, headers=short)
    assert user.status_code == 201, user.text
    assert datetime.fromisoformat(user.json()["api_key"]["key"]["expires_at"]) == soon
    # A key with no expiry still makes keys with none.
    forever = await client.post("/keys", json={"name": "forever"}, headers=admin_key)
    assert forever.json()["key"]["expires_at"] is None
