"""PATCH .../documents/{id}: a document's metadata and tags replaced in place, with no new
version and nothing re-indexed."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from quarry.tenancy.users import NewUser
from tests.conftest import bearer


async def _document(client: httpx.AsyncClient, key: dict[str, str]) -> dict:
    assert (await client.post("/projects", json={"name": "docs"}, headers=key)).is_success
    made = await client.post(
        "/projects/docs/documents/text",
        json={"text": "Rivers run to the sea.", "tags": ["old"], "metadata": {"year": 2019}},
        headers=key,
    )
    assert made.status_code == 202, made.text
    return made.json()["document"]


def _jobs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    assert row is not None
    return int(row[0])


async def test_metadata_and_tags_are_replaced_in_place(
    client: httpx.AsyncClient, admin: NewUser, fresh_database: str
) -> None:
    key = bearer(admin.api_key.secret)
    document = await _document(client, key)
    jobs = _jobs(fresh_database)
    path = f"/projects/docs/documents/{document['id']}"

    tagged = await client.patch(path, json={"tags": ["new", "reviewed"]}, headers=key)
    assert tagged.status_code == 200, tagged.text
    assert tagged.json()["tags"] == ["new", "reviewed"]
    assert tagged.json()["metadata"] == {"year": 2019}  # not given: as it was

    dated = await client.patch(path, json={"metadata": {"year": 2020}}, headers=key)
    after = dated.json()
    assert after["metadata"] == {"year": 2020}
    assert after["tags"] == ["new", "reviewed"]
    for unchanged in ("version", "status", "content_hash", "chunk_count"):
        assert after[unchanged] == document[unchanged], unchanged
    assert _jobs(fresh_database) == jobs  # nothing queued
    assert (await client.get(path, headers=key)).json()["tags"] == ["new", "reviewed"]
    cleared = await client.patch(path, json={"tags": [], "metadata": {}}, headers=key)
    assert (cleared.json()["tags"], cleared.json()["metadata"]) == ([], {})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"tags": None, "metadata": None}, "body"),
        ({"tags": "a"}, "tags"),
        ({"tags": ["x" * 257]}, "tags.0"),
        ({"tags": ["a"] * 101}, "tags"),
        ({"metadata": []}, "metadata"),
        ({"metadata": {"note": "a\u0000b"}}, "metadata.note"),
        ({"title": "no"}, "title"),
    ],
)
async def test_bad_changes_are_422_and_change_nothing(
    client: httpx.AsyncClient, admin: NewUser, body: dict, field: str
) -> None:
    key = bearer(admin.api_key.secret)
    document = await _document(client, key)
    path = f"/projects/docs/documents/{document['id']}"
    answer = await client.patch(path, json=body, headers=key)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_error"
    assert field in {error["field"] for error in answer.json()["errors"]}
    now = (await client.get(path, headers=key)).json()
    assert (now["tags"], now["metadata"]) == (["old"], {"year": 2019})


async def test_only_an_editor_describes_and_only_a_document_of_the_project(
    client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    document = await _document(client, key)
    made = await client.post("/users", json={"name": "vera"}, headers=key)
    vera = bearer(made.json()["api_key"]["secret"])
    added = await client.put("/projects/docs/members/vera", json={"role": "viewer"}, headers=key)
    assert added.status_code == 200, added.text
    path = f"/projects/docs/documents/{document['id']}"
    refused = await client.patch(path, json={"tags": ["mine"]}, headers=vera)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    missing = await client.patch(
        f"/projects/docs/documents/{uuid.uuid4()}", json={"tags": ["x"]}, headers=key
    )
    assert missing.status_code == 404
    assert missing.json()["code"] == "document_not_found"
