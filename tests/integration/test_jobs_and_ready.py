"""The job loop end to end, and readiness that reflects each dependency."""

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from quarry.app import create_app
from quarry.runtime import Runtime
from quarry.settings import Settings
from quarry.tenancy.models import Principal
from quarry.tenancy.users import NewUser
from tests.conftest import bearer
from tests.support import app_client


async def _wait_for(client: httpx.AsyncClient, url: str, key: dict[str, str], status: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = (await client.get(url, headers=key)).json()
        if job["status"] == status:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never reached {status}: {job}")


@pytest.fixture
async def worker_client(settings: Settings, runtime: Runtime):
    """The app with a worker running inside it, as `quarry serve` does on the embedded default."""
    settings = settings.model_copy(update={"worker_in_process": True})
    async with app_client(settings, runtime) as http:
        yield http


async def test_echo_job_runs_and_its_result_is_visible(
    worker_client: httpx.AsyncClient, admin: NewUser
) -> None:
    key = bearer(admin.api_key.secret)
    await worker_client.post("/projects", json={"name": "jobs"}, headers=key)
    queued = await worker_client.post(
        "/projects/jobs/jobs/echo", json={"message": "hi"}, headers=key
    )
    assert queued.status_code == 202
    job_url = f"/projects/jobs/jobs/{queued.json()['id']}"
    job = await _wait_for(worker_client, job_url, key, "succeeded")
    assert job["result"]["echo"] == "hi"
    assert job["attempts"] == 1
    refused = await worker_client.post(
        "/projects/jobs/jobs/echo", json={"message": "h\x00i"}, headers=key
    )
    assert refused.status_code == 422, refused.text  # Postgres' jsonb holds no NUL


async def test_jobs_are_scoped_by_project(client: httpx.AsyncClient, admin: NewUser) -> None:
    key = bearer(admin.api_key.secret)
    await client.post("/projects", json={"name": "one"}, headers=key)
    await client.post("/projects", json={"name": "two"}, headers=key)
    job = (await client.post("/projects/one/jobs/echo", json={"message": "m"}, headers=key)).json()
    assert (await client.get(f"/projects/one/jobs/{job['id']}", headers=key)).status_code == 200
    other = await client.get(f"/projects/two/jobs/{job['id']}", headers=key)
    assert other.status_code == 404
    assert other.json()["code"] == "job_not_found"
    huge = await client.get(f"/projects/one/jobs/{2**70}", headers=key)
    assert huge.status_code == 422


async def test_ready_without_a_worker_says_so(client: httpx.AsyncClient, admin: NewUser) -> None:
    response = await client.get("/ready", headers=bearer(admin.api_key.secret))
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"]
    assert checks["migrations"]["ok"]
    assert checks["models"]["ok"]
    assert not checks["worker"]["ok"]
    assert "quarry worker" in checks["worker"]["detail"]
    # Without an admin's key: which checks pass, not why the others fail.
    anonymous = await client.get("/ready")
    assert anonymous.status_code == 503
    assert anonymous.json()["checks"]["worker"] == {"ok": False, "detail": "not ready"}
    assert anonymous.json()["checks"]["database"] == {"ok": True, "detail": "ok"}


async def test_ready_with_a_worker(worker_client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 30
    while (response := await worker_client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.1)
    assert response.json()["status"] == "ready"
    assert set(response.json()["checks"]) == {"database", "migrations", "worker", "models"}


async def test_ready_reports_missing_models(
    settings: Settings, runtime: Runtime, tmp_path: Path, admin: NewUser
) -> None:
    broken = settings.model_copy(update={"generation_model_path": tmp_path / "absent.gguf"})
    app = create_app(broken, runtime=runtime)
    async with app.router.lifespan_context(app):
        app.state.runtime.settings = broken
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            response = await http.get("/ready", headers=bearer(admin.api_key.secret))
            anonymous = await http.get("/ready", headers=bearer("qk_not_a_key"))
    assert response.status_code == 503
    assert not response.json()["checks"]["models"]["ok"]
    assert "absent.gguf" in response.json()["checks"]["models"]["detail"]
    assert anonymous.status_code == 503
    assert "absent.gguf" not in anonymous.text  # paths are for admins


# Procrastinate's fetch: the first queued job of the queue, by priority and id, whose lock no
# other job holds (the candidate part of procrastinate_fetch_job_v2).
FETCH_CANDIDATE = """
SELECT jobs.id FROM procrastinate_jobs AS jobs
WHERE NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs AS other_jobs
    WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
      AND (other_jobs.status = 'doing'
           OR (other_jobs.status = 'todo'
               AND (other_jobs.priority > jobs.priority
                    OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)))))
  AND jobs.status = 'todo' AND jobs.queue_name = ANY(ARRAY['ingest'])
  AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
"""


async def test_a_burst_of_jobs_leaves_the_fetch_plan_walking_the_priority_index(
    runtime: Runtime, admin_principal: Principal
) -> None:
    """With the statistics of an empty table, every fetch would check all queued jobs' locks
    and sort them; after a burst the queue's statistics are fresh and a fetch stops at the
    first free job."""
    project = await runtime.projects.create(admin_principal, "burst")
    for _ in range(600):
        await runtime.jobs.enqueue_ingest(project.id, uuid.uuid4())
    async with runtime.db.pool.connection() as conn:
        stats = await (
            await conn.execute(
                "SELECT reltuples FROM pg_class WHERE relname = 'procrastinate_jobs'"
            )
        ).fetchone()
        plan = await (await conn.execute(f"EXPLAIN (FORMAT JSON) {FETCH_CANDIDATE}")).fetchone()
    assert stats is not None
    assert stats["reltuples"] >= 500
    assert plan is not None
    text = json.dumps(plan["QUERY PLAN"])
    assert "procrastinate_jobs_priority_idx_v1" in text
    assert '"Sort"' not in text
