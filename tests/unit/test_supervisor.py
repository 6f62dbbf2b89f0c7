"""The supervisor that keeps a worker running inside another process."""

import asyncio
import contextlib

from quarry.runtime import _supervise


class ScriptedWorker:
    """Fails, then stops on its own, then runs until cancelled."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = asyncio.Event()

    async def run_worker(self, *, install_signal_handlers: bool, name: str, sweeps: bool) -> None:
        assert install_signal_handlers is False
        assert sweeps is False
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("side task failed")
        if self.runs == 2:
            return
        self.running.set()
        await asyncio.Event().wait()


async def test_a_worker_that_fails_or_stops_is_started_again_until_cancelled() -> None:
    worker = ScriptedWorker()
    task = asyncio.create_task(_supervise(worker, "test", False, pause=0.01))  # type: ignore[arg-type]
    await asyncio.wait_for(worker.running.wait(), 5)
    assert worker.runs == 3
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert worker.runs == 3
