"""Helpers for tests: free ports, a quarry server subprocess, waiting on HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from quarry.app import create_app
from quarry.runtime import Runtime
from quarry.settings import Settings


@asynccontextmanager
async def app_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over the real app made from ``settings`` (its lifespan run), sharing
    ``runtime``."""
    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quarry.test") as http:
            yield http


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def quarry_env(**values: str | Path) -> dict[str, str]:
    """The test process's environment without QUARRY_* leaking in, plus the given values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    env.update({f"QUARRY_{k.upper()}": str(v) for k, v in values.items()})
    env["QUARRY_LOG_FORMAT"] = "json"
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quarry", *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class QuarryProcess:
    """A `quarry ...` subprocess whose output goes to a log file; stopped with SIGTERM."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quarry", *args],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL only if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class QuarryServer(QuarryProcess):
    """`quarry serve` on a free port, ready when /ready answers 200."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *extra_args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["serve", "--port", str(self.port), *extra_args], env, log_path)

    def wait_ready(self, timeout: float = 90) -> httpx.Response:
        """Wait for /ready to answer 200."""
        return self.wait_for("/ready", 200, timeout)

    def wait_for(self, path: str, status: int, timeout: float = 90) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"quarry serve exited early:\n{self.output()}")
            try:
                response = httpx.get(f"{self.url}{path}", timeout=5)
                if response.status_code == status:
                    return response
                last = response.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.25)
        raise AssertionError(f"not ready after {timeout}s (last: {last}):\n{self.output()}")


class StaticSite:
    """A real HTTP server on a free port answering fixed pages, some of them slowly (``slow``:
    seconds before the answer; ``drip``: seconds between the body's bytes), some with a
    redirect (``redirects``: path to Location); ``seen`` lists the paths requested."""

    def __init__(
        self,
        pages: dict[str, tuple[int, bytes]],
        slow: dict[str, float] | None = None,
        *,
        redirects: dict[str, str] | None = None,
        drip: dict[str, float] | None = None,
        host: str = "127.0.0.1",
    ):
        import http.server
        import threading

        site_pages, delays, moved, drips = pages, slow or {}, redirects or {}, drip or {}
        self.seen: list[str] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                time.sleep(delays.get(self.path, 0))
                if self.path in moved:
                    self.send_response(302)
                    self.send_header("Location", moved[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body = site_pages.get(self.path, (404, b""))
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if self.path not in drips:
                        self.wfile.write(body)  # a client that timed out has gone
                        return
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(drips[self.path])

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def settle(rt, project_id, timeout: float = 300) -> dict[str, int]:
    """Wait (a worker must be running) until no document of the project is pending or
    indexing; return the documents per status."""
    import asyncio

    counts = await asyncio.wait_for(rt.documents.wait_settled(project_id, poll=0.1), timeout)
    return counts.documents_by_status


async def index_texts(rt, principal, project_name: str, texts: list[str]):
    """A new project with each text as a plain-text document (external ids "0", "1", ...),
    indexed by a worker in this process; every document must index. Returns the project."""
    from quarry.ingest.documents import text_source
    from quarry.runtime import background_worker

    project = await rt.projects.create(principal, project_name)
    for i, text in enumerate(texts):
        source = text_source(text, external_id=str(i), title="", fmt="txt", metadata={}, tags=())
        await rt.documents.submit(project.id, source)
    async with background_worker(rt, "test"):
        assert (await settle(rt, project.id))["failed"] == 0
    return project


@contextmanager
def serving_in_thread(app: Any, log_level: str = "error") -> Iterator[str]:
    """An ASGI app on a real uvicorn server in a thread of its own; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
