"""Request bodies past QUARRY_MAX_REQUEST_BYTES are a 413 before they are read into memory."""

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


@pytest.fixture
async def small_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    limited = settings.model_copy(update={"max_request_bytes": LIMIT})
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

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await small_client.post(
        "/projects", content=chunks(), headers={**key, "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "payload_too_large"
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
