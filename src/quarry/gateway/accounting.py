"""Usage accounting: a record for every provider attempt, and prices to turn tokens into cost.

Records are queued in memory and written in batches by a background task, so a call never
waits on Postgres; ``flush()`` writes what is queued (tests, CLI commands, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol
from uuid import UUID

import psycopg
import structlog

from quarry.db.database import Database
from quarry.gateway.config import ModelConfig

log = structlog.get_logger(__name__)

Operation = Literal["generate", "stream", "json", "embed"]
Outcome = Literal["ok", "error", "partial", "cancelled", "cached"]

# USD per million tokens (input, output), as published by the providers; a model's own
# price_input / price_output in configuration overrides these. Local providers cost nothing
# beyond the machine they run on. Any other model without a price is recorded with cost null.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "claude-3-5-haiku-latest": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
}
FREE_PROVIDERS = frozenset({"local", "sentence_transformers"})


@dataclass(frozen=True)
class Price:
    input: float  # USD per million tokens
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


def price_of(config: ModelConfig, provider_model: str) -> Price | None:
    """The configured price, else the table's, else free for local models, else None. Each
    side (input, output) is looked up on its own; a side no source knows leaves the price
    unknown rather than zero."""
    known = PRICES.get(provider_model)
    if known is None and config.provider in FREE_PROVIDERS:
        known = (0.0, 0.0)
    given = (config.price_input, config.price_output)
    sides = [g if g is not None else (known[i] if known else None) for i, g in enumerate(given)]
    if sides[0] is None or sides[1] is None:
        return None
    return Price(sides[0], sides[1])


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    project_id: UUID | None
    user_id: UUID | None
    role: str
    operation: Operation
    provider: str
    model: str
    provider_model: str
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    cost: float | None
    latency_ms: float
    ttft_ms: float | None
    outcome: Outcome
    error: str | None = None


class UsageSink(Protocol):
    async def write(self, records: Sequence[UsageRecord]) -> None: ...


class PostgresUsageSink:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, records: Sequence[UsageRecord]) -> None:
        async with self.db.transaction() as conn, conn.cursor() as cur:
            await cur.executemany(self.db.queries["usage.insert"], [asdict(r) for r in records])


class MemoryUsageSink:
    """Keeps records in a list: for a gateway with no database, and for tests of callers."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    async def write(self, records: Sequence[UsageRecord]) -> None:
        self.records.extend(records)


class UsageLog:
    """Queues records and writes them in batches on a background task.

    A write that fails (Postgres restarting) keeps its records for the next try, up to
    ``max_pending``; past that the oldest are dropped with an error in the log."""

    def __init__(
        self,
        sink: UsageSink,
        *,
        interval: float = 0.25,
        batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self._pending: list[UsageRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()

    def record(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if len(self._pending) > self.max_pending:
            dropped = len(self._pending) - self.max_pending
            del self._pending[:dropped]
            log.error("usage records dropped: the usage store is not accepting writes", n=dropped)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-log")
        if len(self._pending) >= self.batch:
            self._wake.set()

    async def _run(self) -> None:
        while self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except (psycopg.Error, OSError):
                log.exception("usage records not written yet; will retry", n=len(self._pending))
                await asyncio.sleep(self.interval)

    async def flush(self) -> None:
        async with self._write_lock:
            while self._pending:
                batch, self._pending = self._pending[: self.batch], self._pending[self.batch :]
                try:
                    await self.sink.write(batch)
                except (psycopg.DataError, psycopg.IntegrityError):
                    await self._one_by_one(batch)  # a bad row must not block the rest
                except BaseException:
                    self._pending[:0] = batch
                    raise

    async def _one_by_one(self, batch: list[UsageRecord]) -> None:
        for record in batch:
            try:
                await self.sink.write([record])
            except (psycopg.DataError, psycopg.IntegrityError):
                log.exception("usage record dropped: Postgres refuses it", record=record)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()


@dataclass(frozen=True)
class UsageRow:
    day: date
    model: str
    calls: int
    errors: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost: float | None  # None when every call of the row is unpriced
    unpriced: int


async def usage_by_model_day(
    db: Database, *, project_id: UUID | None, since: datetime
) -> list[UsageRow]:
    rows = await db.fetch_all("usage.by_model_day", project_id=project_id, since=since)
    return [_usage_row(row) for row in rows]


def _usage_row(row: Mapping[str, Any]) -> UsageRow:
    cost = row["cost"]
    return UsageRow(
        day=row["day"],
        model=row["model"],
        calls=row["calls"],
        errors=row["errors"],
        cached=row["cached"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost=float(cost) if isinstance(cost, Decimal) else cost,
        unpriced=row["unpriced"],
    )
