"""Request bodies past QUARRY_MAX_REQUEST_BYTES, and multipart uploads past
QUARRY_MAX_UPLOAD_REQUEST_BYTES, are a 413 before they are read into memory or onto disk."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from quarry.runtime import Runtime
from quarry.settings import Settings
from quarry.tenancy.users import NewUser
from tests.conftest import bearer
from tests.support import app_client

LIMIT = 2048
UPLOAD_LIMIT = 16 * 1024


@pytest.fixture
async def small_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    limited = settings.model_copy(
        update={"max_request_bytes": LIMIT, "max_upload_request_bytes": UPLOAD_LIMIT}
    )
    async with app_client(limited, runtime) as http:
        yield http


async def test_a_body_past_the_limit_is_a_413_and_stores_nothing(
    small_client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    big = json.dumps({"name": "big", "description": "x" * LIMIT}).encode()
    declared = await small_client.post(
        "/projects", content=big, headers={**key, "content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"
    assert declared.headers["x-request-id"] == declared.json()["request_id"]
    assert "QUARRY_MAX_REQUEST_BYTES" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await small_client.post(
        "/projects", content=chunks(), headers={**key, "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "payload_too_large"
    # Refused before or after the body began to arrive, the problem is the same.
    assert {k: v for k, v in streamed.json().items() if k != "request_id"} == {
        k: v for k, v in declared.json().items() if k != "request_id"
    }
    assert (await small_client.get("/projects", headers=key)).json() == []

    small = await small_client.post("/projects", json={"name": "small"}, headers=key)
    assert small.status_code == 201
    # Uploads are held to the per-file limit (QUARRY_MAX_UPLOAD_BYTES) instead.
    upload = await small_client.post(
        "/projects/small/documents",
        files={"files": ("long.txt", b"A long document. " * 500)},
        headers=key,
    )
    assert upload.status_code == 202, upload.text


async def test_an_upload_past_its_total_limit_is_a_413_and_stores_nothing(
    small_client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    assert (await small_client.post("/projects", json={"name": "up"}, headers=key)).is_success
    # Two files, each well under the per-file limit, together over the upload limit.
    files = [
        ("files", (f"part{n}.txt", f"Part {n} of a long report. ".encode() * 400)) for n in range(2)
    ]
    declared = await small_client.post("/projects/up/documents", files=files, headers=key)
    assert declared.status_code == 413, declared.text
    assert declared.json()["code"] == "payload_too_large"
    assert "QUARRY_MAX_UPLOAD_REQUEST_BYTES" in declared.json()["detail"]

    request = small_client.build_request("POST", "/projects/up/documents", files=files)
    body = request.read()
    assert len(body) > UPLOAD_LIMIT

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    streamed = await small_client.post(
        "/projects/up/documents",
        content=chunks(),
        headers={**key, "content-type": request.headers["content-type"]},
    )
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["code"] == "payload_too_large"
    listed = await small_client.get("/projects/up/documents", headers=key)
    assert listed.json()["documents"] == []

    one = await small_client.post("/projects/up/documents", files=files[:1], headers=key)
    assert one.status_code == 202, one.text
    # Any other route sent as multipart is held to the limit of every other body.
    other = await small_client.post("/projects/up/documents/texts", files=files[:1], headers=key)
    assert other.status_code == 413, other.text
    assert "QUARRY_MAX_REQUEST_BYTES" in other.json()["detail"]


async def test_a_large_body_without_a_valid_key_is_refused_before_it_is_read(
    small_client: httpx.AsyncClient, client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    assert (await small_client.post("/projects", json={"name": "kf"}, headers=key)).is_success
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(64):
            pulled += 1
            yield b"x" * 4096

    for headers, code in [
        ({}, "missing_api_key"),
        ({"authorization": "Bearer qk_not_a_real_key"}, "invalid_api_key"),
    ]:
        pulled = 0
        streamed = await small_client.post(
            "/projects/kf/documents/texts",
            content=chunks(),
            headers={**headers, "content-type": "application/json"},
        )
        assert streamed.status_code == 401, streamed.text
        assert streamed.json()["code"] == code
        assert pulled <= 1  # at most what the client sent before the answer
        declared = await small_client.post(
            "/projects/kf/documents",
            files={"files": ("big.txt", b"words " * 20_000)},
            headers=headers,
        )
        assert declared.status_code == 401, declared.text
        assert declared.json()["code"] == code
        assert declared.headers["www-authenticate"] == "Bearer"
    listed = await small_client.get("/projects/kf/documents", headers=key)
    assert listed.json()["documents"] == []
    # Paths that need no key are left alone: a stray body there gets the path's own answer.
    pulled = 0
    health = await small_client.post("/health", content=chunks())
    assert health.status_code == 405, health.text

    # With a valid key a large body is read and taken, declared or streamed (on the default
    # limits: the small client's would refuse it).
    taken = await client.post(
        "/projects/kf/documents", files={"files": ("big.txt", b"words " * 20_000)}, headers=key
    )
    assert taken.status_code == 202, taken.text
    body = json.dumps({"documents": [{"text": "words " * 20_000, "external_id": "t"}]})

    async def body_chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096].encode()

    streamed_in = await client.post(
        "/projects/kf/documents/texts",
        content=body_chunks(),
        headers={**key, "content-type": "application/json"},
    )
    assert streamed_in.status_code == 202, streamed_in.text
    # A small body still reaches its route, which checks the key as before.
    small = await small_client.post("/projects/kf/documents/text", json={"text": "hi"})
    assert small.status_code == 401
    assert small.json()["code"] == "missing_api_key"
