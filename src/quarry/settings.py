"""One validated settings object for every quarry process.

Sources, highest priority first: explicit overrides (CLI flags), ``QUARRY_*`` environment
variables, the TOML file named by ``--config`` / ``QUARRY_CONFIG``, then the defaults below.
Settings are built once in ``main()`` / ``create_app()`` and passed down; nothing reads them
from a module global.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import croniter  # type: ignore[import-untyped]
import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from quarry.gateway.config import ModelConfig, default_models, default_roles

ENV_PREFIX = "QUARRY_"


def default_data_dir() -> Path:
    return platformdirs.user_data_path("quarry")


class SettingsError(Exception):
    """Settings that cannot start quarry; the message names each setting and its fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
    )

    config: Path | None = Field(
        default=None,
        description="the path of an existing TOML file whose keys are setting names",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="a directory quarry may create and write (embedded database, admin.key)",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "a postgresql:// URL of a Postgres 15+ server with the vector extension, "
            "or unset for the embedded database"
        ),
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="an interface address")
    port: int = Field(default=8000, ge=1, le=65535, description="a TCP port from 1 to 65535")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="one of debug, info, warning, error"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json (one object per line) or console"
    )
    db_pool_min_size: int = Field(default=1, ge=1, description="a whole number of at least 1")
    db_pool_max_size: int = Field(
        default=20,
        ge=1,
        description="a whole number of at least 1 (a worker holds one for listening, and its "
        "concurrent jobs take turns with the rest)",
    )
    db_connect_timeout: float = Field(
        default=5.0, gt=0, le=300, description="seconds, more than 0 and at most 300"
    )
    auto_migrate: bool = Field(
        default=True, description="true to apply pending migrations at start, or false"
    )
    worker_in_process: bool | None = Field(
        default=None,
        description=(
            "true or false; unset runs a worker inside `quarry serve` only on the embedded database"
        ),
    )
    # Jobs mostly wait on the batched embedder, and the more documents wait together, the
    # larger and better sorted its passes and the fewer the group commits: against 32 jobs in
    # flight, 128 took 6-14% off indexing (AMX and AVX-512 cores alike). 256 took a further 3%
    # off a bulk load alone, but nothing with searches running in the same process, whose p95
    # rose by 15-20% (bench/README.md): a worker of its own doing bulk loads may set it.
    worker_concurrency: int = Field(
        default=128,
        ge=1,
        le=256,
        description="a whole number from 1 to 256 (jobs mostly wait on the batched embedder)",
    )
    worker_heartbeat_interval: float = Field(
        default=10.0, gt=0, description="seconds between worker heartbeats, more than 0"
    )
    ready_worker_stale_after: float = Field(default=60.0, gt=0, description="seconds, more than 0")
    bootstrap_admin: bool = Field(
        default=True,
        description="true to create an admin user and key on first start, or false",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="an API key for the CLI to act with (default: the data directory's admin.key)",
    )
    embedding_model_path: Path | None = Field(
        default=None,
        description="a sentence-transformers model directory, or unset for the bundled MiniLM",
    )
    generation_model_path: Path | None = Field(
        default=None,
        description="a GGUF file, or unset for the bundled SmolLM2-135M-Instruct",
    )

    embedding_provider: Literal["local", "openai_compatible"] = Field(
        default="local",
        description="local (sentence-transformers, the bundled model by default) or "
        "openai_compatible (any /v1/embeddings server)",
    )
    embedding_base_url: str | None = Field(
        default=None,
        description="the base URL of an OpenAI-compatible API, such as http://host:8000/v1",
    )
    embedding_api_key: SecretStr | None = Field(
        default=None, description="the API key for the embedding server, if it needs one"
    )
    embedding_model: str | None = Field(
        default=None,
        description="the model name sent to the embedding server (openai_compatible only)",
    )
    embedding_max_tokens: int = Field(
        default=512, ge=8, description="the remote embedding model's input limit in tokens"
    )
    embedding_tokenizer_path: Path | None = Field(
        default=None,
        description="a tokenizer.json measuring the remote model's tokens "
        "(default: the bundled MiniLM tokenizer, an approximation)",
    )
    embedding_batch_size: int = Field(
        default=32, ge=1, le=2048, description="texts per embedding call, from 1 to 2048"
    )
    local_embedding_batch_size: int = Field(
        default=8,
        ge=1,
        le=512,
        description="texts per forward pass of the local embedding model, from 1 to 512: "
        "every text in a pass is padded to the longest, and on CPU small passes cost no more "
        "per token (bench/README.md)",
    )
    local_embedding_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="the local embedding model's arithmetic: auto (bfloat16 where this CPU runs "
        "it at least a fifth faster with the same vectors, timed at start; else float32), float32 "
        "or bfloat16 (bench/README.md)",
    )
    local_query_runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="what runs the local model for search queries: auto (ONNX Runtime, exported "
        "from the model when it loads, about 2 s; PyTorch if that fails), onnx (fail if it "
        "does) or torch; indexing always runs PyTorch (bench/README.md)",
    )
    local_embedding_workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="threads encoding documents with the local model, each with one torch "
        "thread, from 0 to 256; 0 is one per core (bench/README.md)",
    )
    index_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="how much lower the CPU priority of the threads encoding documents with "
        "the local model is than the process's (a Linux nice increment, 0 to 19; 0 keeps them "
        "equal): searches, requests and Postgres get a core first while indexing keeps every "
        "core busy (bench/README.md)",
    )
    embedding_concurrency: int = Field(
        default=4, ge=1, le=64, description="embedding HTTP calls in flight, from 1 to 64"
    )
    embedding_timeout: float = Field(
        default=60.0, gt=0, description="seconds one embedding HTTP call may take"
    )
    embedding_max_retries: int = Field(
        default=5, ge=0, le=20, description="retries of a failed embedding call, 0 to 20"
    )
    chunk_tokens: int = Field(
        default=256,
        ge=16,
        description="the largest chunk in embedder tokens (capped at the embedder's input limit)",
    )
    chunk_overlap: int = Field(
        default=32, ge=0, description="tokens shared by neighbouring chunks, less than chunk_tokens"
    )
    max_upload_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1, description="the largest document accepted, in bytes"
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="the largest request body other than an upload of files, in bytes",
    )
    max_upload_request_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024,
        description="the largest upload of files (POST /projects/{p}/documents), all its files "
        "together, in bytes",
    )
    fetch_timeout: float = Field(
        default=20.0, gt=0, description="seconds a URL fetch may take in all"
    )
    fetch_allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list,
        description="networks other than the public internet that URL documents may be "
        'fetched from, as a list of CIDR ranges (JSON in the variable: ["10.1.0.0/16"]); '
        "loopback, private, link-local and reserved addresses are refused otherwise",
    )
    blob_store: Literal["file", "postgres"] | None = Field(
        default=None,
        description="file (under the data directory) or postgres; unset: file on the embedded "
        "database, postgres otherwise",
    )
    ingest_max_attempts: int = Field(
        default=5, ge=1, le=50, description="tries of a document before it fails, 1 to 50"
    )
    ingest_retry_base: float = Field(
        default=2.0, ge=0, description="seconds before the first retry; doubles each time"
    )
    worker_stalled_after: float = Field(
        default=30.0,
        gt=0,
        description="seconds without a heartbeat before a worker's jobs are taken over; at "
        "least twice the heartbeat interval",
    )
    worker_shutdown_timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds a stopping worker lets its running jobs finish before it stops "
        "them and queues them again; with the heartbeat interval, less than "
        "worker_stalled_after (default: worker_stalled_after less two heartbeat intervals)",
    )
    blob_sweep_cron: str = Field(
        default="23 * * * *",
        description="when workers sweep away kept bytes no document uses (a cron line, UTC, "
        "with an optional sixth field of seconds; empty: never)",
    )

    bm25_k1: float = Field(
        default=1.2, ge=0, le=10, description="BM25 term-frequency saturation, 0 to 10"
    )
    bm25_b: float = Field(default=0.75, ge=0, le=1, description="BM25 length normalisation, 0 to 1")
    bm25_split_chunks: int = Field(
        default=20_000,
        ge=0,
        description="project size (chunks) from which a BM25 query's postings are read by two "
        "connections at once, each half of the chunk ids; 0 never splits",
    )
    bm25_pack_chunks: int = Field(
        default=20_000,
        ge=0,
        description="chunks written to a project since its postings were last packed into "
        "blocks (quarry.search.postings) at which the indexing job queues the next pack; "
        "0 never packs",
    )
    bm25_pack_min_postings: int = Field(
        default=1024,
        ge=1,
        description="postings a term needs in the row table before a pack moves them into "
        "blocks (rarer terms are cheap to read as rows)",
    )
    rrf_k: int = Field(
        default=60, ge=1, le=1000, description="reciprocal rank fusion's k, 1 to 1000"
    )
    search_candidates: int = Field(
        default=100, ge=1, le=1000, description="hits each retriever returns before fusion"
    )
    hnsw_ef_search: int = Field(
        default=100, ge=1, le=1000, description="HNSW search breadth (recall against speed)"
    )
    hnsw_m: int = Field(default=16, ge=2, le=100, description="HNSW links per node, 2 to 100")
    hnsw_ef_construction: int = Field(
        default=64, ge=4, le=1000, description="HNSW build breadth, 4 to 1000"
    )
    reranker: Literal["late_interaction", "cross_encoder", "llm", "none"] | None = Field(
        default=None,
        description="the rerank stage of hybrid searches: late_interaction (the local "
        "embedding model's token vectors, MaxSim; indexing then stores each chunk's, about "
        "5.5 KB for 200 tokens), cross_encoder (reranker_model), llm (the gateway's rerank role "
        "grades each passage), none, or unset: cross_encoder when reranker_model is set, "
        "late_interaction with the local embedder, else none",
    )
    reranker_model: str | None = Field(
        default=None,
        description="a cross-encoder: a local directory or an id in the local Hugging Face "
        "cache (never downloaded); unset: no cross-encoder",
    )
    rerank_depth: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="fused candidates the reranker reads; unset: the reranker's own "
        "(20 for late_interaction, 50 for cross_encoder and llm)",
    )

    models: dict[str, ModelConfig] = Field(
        default_factory=dict,
        description="a table of model names to their provider and parameters (TOML [models.NAME]"
        " or JSON); added to, or replacing, the built-in local and local-embedding",
    )
    roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="a table of role names to an ordered list of model names (TOML [roles]);"
        " roles not named keep their default chain",
    )
    model_call_deadline: float = Field(
        default=120.0, gt=0, description="seconds one gateway call may take, retries included"
    )
    model_failures_before_cooldown: int = Field(
        default=3, ge=1, description="failed calls in a row before a model is cooled down"
    )
    model_cooldown: float = Field(
        default=60.0, ge=0, description="seconds a failing model is skipped by its chains"
    )
    answer_budget: int = Field(
        default=2048,
        ge=256,
        description="tokens an answer may use in all (prompt and answer), in the answering "
        "model's tokens; a request may lower it",
    )
    answer_reserve: int = Field(
        default=384, ge=16, description="tokens of the budget kept for the answer itself"
    )
    answer_evidence_share: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="of the budget less the answer's reserve, the most the evidence may take "
        "(it never takes more than the question, instructions and history leave)",
    )
    answer_history_budget: int = Field(
        default=512,
        ge=0,
        description="tokens a conversation's earlier turns may take (at most half of what the "
        "question leaves)",
    )
    context_duplicate_threshold: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="cosine similarity at which two retrieved chunks count as near-duplicates",
    )
    context_max_per_document: int = Field(
        default=2, ge=1, le=20, description="chunks of one document an answer's context may hold"
    )
    context_passage_tokens: int = Field(
        default=128,
        ge=0,
        description="cut a retrieved chunk longer than this many tokens (of the answering "
        "model, 16 or more) down to its sentences that best match the query, so more sources "
        "fit the budget; 0 keeps whole chunks",
    )
    document_summaries: bool = Field(
        default=False,
        description="true to write a rolling summary of each document after it is indexed "
        "(role maintenance; the context builder may use it when the budget is tight), or false: "
        "with the bundled model it costs seconds per document, see bench/README.md",
    )
    model_cache: bool = Field(
        default=False, description="true to cache temperature-0 answers in Postgres, or false"
    )
    model_cache_ttl: float = Field(
        default=86400.0, gt=0, description="seconds a cached answer stays valid"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"the URL scheme must be postgresql://, not {scheme or 'missing'}")
        return value

    @field_validator("blob_sweep_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        try:  # a valid line may still never come (31 February): the worker would then fail
            croniter.croniter(value).get_next()
        except (ValueError, KeyError, croniter.CroniterError) as exc:
            raise ValueError(
                f"not a cron line that comes due: {value!r} ({exc}; e.g. '23 * * * *', "
                "or empty for never)"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("db_pool_min_size must not exceed db_pool_max_size")
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be less than chunk_tokens")
        if 0 < self.context_passage_tokens < 16:
            raise ValueError("context_passage_tokens must be 0 (off) or at least 16")
        if self.answer_reserve >= self.answer_budget:
            raise ValueError("answer_reserve must be less than answer_budget")
        if self.embedding_provider == "openai_compatible" and not (
            self.embedding_base_url and self.embedding_model
        ):
            raise ValueError(
                "embedding_provider openai_compatible needs embedding_base_url and embedding_model"
            )
        # A stopping worker sends no heartbeats while its jobs finish; were it to drain past
        # worker_stalled_after, other workers would take its jobs and run them a second time.
        if self.worker_stalled_after < 2 * self.worker_heartbeat_interval:
            raise ValueError(
                "worker_stalled_after must be at least twice worker_heartbeat_interval, or "
                "healthy workers look stalled between heartbeats"
            )
        if (
            self.worker_shutdown_timeout is not None
            and self.worker_shutdown_timeout + self.worker_heartbeat_interval
            >= self.worker_stalled_after
        ):
            raise ValueError(
                "worker_shutdown_timeout plus worker_heartbeat_interval must be less than "
                "worker_stalled_after, or a stopping worker's jobs are taken over while they run"
            )
        if self.ready_worker_stale_after <= self.worker_heartbeat_interval:
            raise ValueError(
                "ready_worker_stale_after must be more than worker_heartbeat_interval, or "
                "/ready fails between heartbeats"
            )
        if self.reranker == "cross_encoder" and not self.reranker_model:
            raise ValueError("reranker cross_encoder needs reranker_model")
        for role, chain in self.model_roles.items():
            if not chain:
                raise ValueError(f"role {role!r} has no models; name at least one")
            for name in chain:
                if name not in self.model_table:
                    raise ValueError(
                        f"role {role!r} names the model {name!r}, which is not configured "
                        "under models"
                    )
        return self

    @property
    def worker_drain_seconds(self) -> float:
        """How long a stopping worker waits for its running jobs (worker_shutdown_timeout)."""
        if self.worker_shutdown_timeout is not None:
            return self.worker_shutdown_timeout
        return self.worker_stalled_after - 2 * self.worker_heartbeat_interval

    @property
    def model_table(self) -> dict[str, ModelConfig]:
        """The built-in models with the configured ones over them. The built-in local models
        read their files from generation_model_path and embedding_model_path when set."""
        builtin = default_models()
        if self.generation_model_path is not None:
            builtin["local"].path = self.generation_model_path
        if self.embedding_model_path is not None:
            builtin["local-embedding"].path = self.embedding_model_path
        return {**builtin, **self.models}

    @property
    def model_roles(self) -> dict[str, list[str]]:
        """Every role's chain: the defaults with the configured roles over them."""
        return {**default_roles(), **self.roles}

    @property
    def reranker_kind(self) -> Literal["late_interaction", "cross_encoder", "llm"] | None:
        """The rerank stage to run, None for none. Unset, late interaction wherever the
        embedder is local: it needs no other model, costs a few milliseconds per search and
        lifts hybrid's nDCG@10 on SciFact from 0.733 to 0.744 (bench/README.md)."""
        if self.reranker == "none":
            return None
        if self.reranker is not None:
            return self.reranker
        if self.reranker_model:
            return "cross_encoder"
        return "late_interaction" if self.embedding_provider == "local" else None

    @property
    def blob_store_kind(self) -> Literal["file", "postgres"]:
        if self.blob_store is not None:
            return self.blob_store
        return "file" if self.embedded else "postgres"

    @property
    def embedded(self) -> bool:
        """True when quarry runs its own Postgres from the pgserver wheel."""
        return self.database_url is None

    @property
    def run_worker_in_process(self) -> bool:
        if self.worker_in_process is None:
            return self.embedded
        return self.worker_in_process

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"

    def unknown_environment(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The ``QUARRY_*`` environment variables that name no setting, each with the
        setting it most resembles: a misspelt one is otherwise silently ignored. Variables a
        configured model reads its API key from are not among them."""
        environ = os.environ if environ is None else environ
        names = [name.upper() for name in type(self).model_fields]
        keys = {model.api_key_env for model in self.models.values() if model.api_key_env}
        known = {f"{ENV_PREFIX}{name}" for name in names} | {key.upper() for key in keys}
        found = []
        for variable in sorted(environ):
            # Settings are read from the environment whatever the case of their names.
            upper = variable.upper()
            if not upper.startswith(ENV_PREFIX) or upper in known:
                continue
            # Compared without the prefix, which every name shares.
            close = difflib.get_close_matches(upper[len(ENV_PREFIX) :], names, n=1, cutoff=0.75)
            found.append(
                f"{variable} (did you mean {ENV_PREFIX}{close[0]}?)" if close else variable
            )
        return found

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = _config_path(init_settings)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config is not None:
            sources.append(InitSettingsSource(settings_cls, _read_toml(config)))
        return tuple(sources)


def _config_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    assert isinstance(init_settings, InitSettingsSource)
    given = init_settings.init_kwargs.get("config") or os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(given) if given else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(
            f"Invalid setting QUARRY_CONFIG / --config: the file {path} does not exist.\n"
            "  fix: point it at an existing TOML file, or unset it."
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"Invalid setting QUARRY_CONFIG / --config: {path} is not valid TOML ({exc}).\n"
            "  fix: correct the file; keys are setting names such as port = 8000."
        ) from None
    data.pop("config", None)
    return data


def load_settings(**overrides: Any) -> Settings:
    """Build settings from overrides, environment and config file; raise SettingsError."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        field = Settings.model_fields.get(name)
        if field is None and name:
            lines.append(
                f"Unknown setting {ENV_PREFIX}{name.upper()} ({name}).\n"
                "  fix: remove it, or correct its spelling (see README, Configuration)."
            )
            continue
        label = f"{ENV_PREFIX}{name.upper()} ({name})" if name else "settings"
        if len(error["loc"]) > 1:  # inside a table: name the entry (models.gpt.temperature)
            label += " at " + ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        fix = field.description if field is not None else None
        if name and fix:
            hint = f"set {ENV_PREFIX}{name.upper()} to {fix}"
        else:
            hint = "see README, Configuration"
        lines.append(f"Invalid setting {label}: {message}.\n  fix: {hint}.")
    return "\n".join(lines)
