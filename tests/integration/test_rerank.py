"""The rerank stage: late interaction over the bundled model, and a real (tiny) cross-encoder
the test builds and saves itself."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from quarry.db.database import StartupError
from quarry.runtime import open_runtime
from quarry.search.models import SearchRequest
from quarry.search.rerank import (
    CrossEncoderReranker,
    LateInteractionReranker,
    blend,
    late_interaction_reranker,
    load_reranker,
    rerank_weight,
)
from quarry.settings import Settings
from quarry.testing import HashEmbedder
from tests.support import index_texts

PASSAGES = [
    "Photovoltaic panels convert sunlight into electricity.",
    "Wind turbines turn moving air into power.",
    "Sourdough bread rises slowly overnight.",
    "Coal plants burn coal and emit carbon dioxide.",
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer BERT with a single relevance output, over MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from quarry.modelfiles import embedding_model_path

    folder = tmp_path_factory.mktemp("cross-encoder")
    minilm = embedding_model_path(Settings(data_dir=folder))
    assert minilm is not None
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


async def test_the_cross_encoder_scores_each_pair_as_the_model_does(
    tiny_cross_encoder: Path,
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reranker = CrossEncoderReranker(tiny_cross_encoder)
    scores = await reranker.score("solar power", PASSAGES)
    assert len(scores) == len(PASSAGES)
    assert len(set(scores)) == len(scores)  # a real model: distinct scores
    assert await reranker.score("solar power", []) == []

    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    with torch.no_grad():
        batch = tokenizer(
            ["solar power"] * len(PASSAGES), PASSAGES, return_tensors="pt", padding=True
        )
        logits = model(**batch).logits.squeeze(-1).tolist()
    # The cross-encoder may squash logits (sigmoid), never reorder them.
    assert sorted(range(4), key=lambda i: scores[i]) == sorted(range(4), key=lambda i: logits[i])


def test_a_missing_reranker_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="QUARRY_RERANKER_MODEL"):
        load_reranker(str(tmp_path / "nothing-here"))


async def test_search_reranks_the_fused_candidates(
    ingest_settings: Settings, embedder, admin_principal, tiny_cross_encoder: Path
) -> None:
    settings = ingest_settings.model_copy(update={"reranker_model": str(tiny_cross_encoder)})
    async with open_runtime(settings, embedder=embedder) as rt:
        assert rt.search.reranker is not None
        project = await index_texts(rt, admin_principal, "rerank", PASSAGES)

        query = "electricity from sunlight or wind"
        plain = await rt.search.search(project.id, SearchRequest(query=query, rerank=False))
        assert plain.search_metadata.reranked is False
        reranked = await rt.search.search(project.id, SearchRequest(query=query))
        meta = reranked.search_metadata
        assert meta.reranked is True
        assert "rerank" in meta.timings_ms
        expected = await rt.search.reranker.score(query, [hit.text for hit in reranked.hits])
        assert [hit.score for hit in reranked.hits] == pytest.approx(expected)
        assert [hit.score for hit in reranked.hits] == sorted(expected, reverse=True)
        assert all("fused" in hit.ranks for hit in reranked.hits)
        assert {hit.chunk_id for hit in reranked.hits} == {hit.chunk_id for hit in plain.hits}


async def test_asking_for_a_rerank_without_a_reranker_is_503(
    ingest_settings: Settings, embedder, tmp_path: Path
) -> None:
    from quarry.app import create_app
    from tests.conftest import bearer

    # "none" wins over a cross-encoder named beside it (this one would fail to load).
    settings = ingest_settings.model_copy(
        update={"reranker": "none", "reranker_model": str(tmp_path / "no-model")}
    )
    async with open_runtime(settings, embedder=embedder) as rt:
        assert rt.search.reranker is None
        admin = await rt.users.bootstrap_admin(tmp_path / "admin.key")
        assert admin is not None
        app = create_app(settings, runtime=rt)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://quarry.test"
            ) as http,
        ):
            key = bearer(admin.api_key.secret)
            await http.post("/projects", json={"name": "norerank"}, headers=key)
            answer = await http.post(
                "/projects/norerank/search", json={"query": "x", "rerank": True}, headers=key
            )
            assert answer.status_code == 503
            assert answer.json()["code"] == "service_unavailable"
            # Not asked for, there is simply no rerank stage.
            plain = await http.post("/projects/norerank/search", json={"query": "x"}, headers=key)
            assert plain.status_code == 200
            assert plain.json()["search_metadata"]["reranked"] is False


async def test_by_default_hybrid_is_reranked_from_the_token_vectors_indexing_kept(
    ingest_runtime, admin_principal
) -> None:
    rt = ingest_runtime  # the default settings: the local embedder and no reranker named
    reranker = rt.search.reranker
    assert isinstance(reranker, LateInteractionReranker)
    project = await index_texts(rt, admin_principal, "default", PASSAGES)
    assert None not in await stored_token_vectors(rt, project.id)

    query = "electricity from sunlight or wind"
    hybrid = await rt.search.search(project.id, SearchRequest(query=query))
    assert hybrid.search_metadata.reranked is True
    assert "rerank" in hybrid.search_metadata.weights
    assert reranker.encoded == 0  # read from storage, not encoded
    # Scored from stored vectors, a search does not queue behind another's encode on the
    # model's thread: with that thread held, the same search still completes.
    release = threading.Event()
    held = asyncio.get_running_loop().run_in_executor(reranker._thread, release.wait)
    try:
        again = await asyncio.wait_for(
            rt.search.search(project.id, SearchRequest(query=query)), timeout=30
        )
    finally:
        release.set()
        await held
    assert [hit.chunk_id for hit in again.hits] == [hit.chunk_id for hit in hybrid.hits]
    # One retriever's ranking is asked for as it is, unless a rerank is asked for too.
    for mode in ("bm25", "vector"):
        alone = await rt.search.search(project.id, SearchRequest(query=query, mode=mode))
        assert alone.search_metadata.reranked is False, mode
        assert all("rerank" not in hit.scores for hit in alone.hits)
        asked = await rt.search.search(
            project.id, SearchRequest(query=query, mode=mode, rerank=True)
        )
        assert asked.search_metadata.reranked is True, mode
    fused = await rt.search.search(project.id, SearchRequest(query=query, rerank=False))
    assert fused.search_metadata.reranked is False
    assert "rerank" not in fused.search_metadata.weights


async def test_a_remote_embedder_has_no_default_rerank_stage(ingest_settings: Settings) -> None:
    async with open_runtime(ingest_settings, embedder=HashEmbedder()) as rt:
        assert rt.search.reranker is None
    named = ingest_settings.model_copy(update={"reranker": "late_interaction"})
    with pytest.raises(StartupError, match="not local"):
        async with open_runtime(named, embedder=HashEmbedder()):
            pass


def test_token_vectors_are_one_unit_row_per_token_the_model_reads(minilm_float32) -> None:
    long = "sunlight " * 400  # past the model's 256-token limit
    texts = ["solar power", PASSAGES[0], long]
    vectors = minilm_float32.token_vectors(texts)
    counts = [len(minilm_float32.tokenizer.encode(t).ids) for t in texts]
    assert [len(v) for v in vectors] == [counts[0], counts[1], minilm_float32.max_tokens]
    for v in vectors:
        assert v.shape[1] == minilm_float32.dimensions
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # A text's vectors do not depend on what shares its pass (padding is masked out).
    alone = minilm_float32.token_vectors([PASSAGES[0]])[0]
    assert np.allclose(alone, vectors[1], atol=1e-4)


async def test_late_interaction_ranks_the_matching_passage_first(minilm) -> None:
    reranker = LateInteractionReranker(minilm)
    try:
        scores = await reranker.score("electricity from sunlight", PASSAGES)
        assert len(scores) == len(PASSAGES)
        assert max(range(len(PASSAGES)), key=scores.__getitem__) == 0
        assert scores[0] > scores[2]  # photovoltaics over sourdough
        assert await reranker.score("x", []) == []
    finally:
        await reranker.aclose()


def test_late_interaction_needs_the_local_model() -> None:
    with pytest.raises(StartupError, match="not local"):
        late_interaction_reranker(HashEmbedder())


async def test_search_blends_late_interaction_with_the_fused_scores(
    ingest_settings: Settings, embedder, admin_principal
) -> None:
    settings = ingest_settings.model_copy(update={"reranker": "late_interaction"})
    async with open_runtime(settings, embedder=embedder) as rt:
        reranker = rt.search.reranker
        assert isinstance(reranker, LateInteractionReranker)
        project = await index_texts(rt, admin_principal, "late", PASSAGES)

        query = "electricity from sunlight or wind"
        plain = await rt.search.search(project.id, SearchRequest(query=query, rerank=False))
        reranked = await rt.search.search(project.id, SearchRequest(query=query))
        assert reranked.search_metadata.reranked is True
        assert {hit.chunk_id for hit in reranked.hits} == {hit.chunk_id for hit in plain.hits}
        # Every candidate (fewer than the depth of 20) was read: its MaxSim as 'rerank', its
        # fused rank as 'fused', and as its score the blend of the two sets of scores. The
        # MaxSims expected are those of the stored vectors and the query's own, as the search
        # read them (an encode in other passes may differ in the last bit of a level where
        # the model runs in bfloat16, and the blend's z-scores magnify such a difference).
        fused = [hit.score for hit in plain.hits]
        stored = await token_vectors_by_chunk(rt, project.id)
        _, query_tokens = await embedder.embed_query_with_tokens(query)
        rerank = await reranker.score(
            query,
            [hit.text for hit in plain.hits],
            token_vectors=[stored[str(hit.chunk_id)] for hit in plain.hits],
            query_token_vectors=query_tokens,
        )
        assert reranker.encoded == 0
        # The MaxSim counts as much as the fusion trusted the dense side for this query.
        weight = rerank_weight(reranker, plain.search_metadata.agreement)
        assert reranked.search_metadata.weights["rerank"] == pytest.approx(weight, abs=1e-4)
        expected = dict(
            zip(
                [hit.chunk_id for hit in plain.hits],
                blend(rerank, fused, reranker.fused_weight, weight),
                strict=True,
            )
        )
        for hit in reranked.hits:
            assert hit.scores["rerank"] == pytest.approx(rerank[hit.ranks["fused"] - 1])
            assert hit.score == pytest.approx(expected[hit.chunk_id])
        assert [hit.score for hit in reranked.hits] == sorted(expected.values(), reverse=True)


def test_one_pass_gives_encodes_vectors_and_each_texts_stored_token_vectors(
    minilm_float32,
) -> None:
    from quarry.ingest.token_vectors import BYTES_PER_TOKEN, punctuation, unpack

    texts = [PASSAGES[0], "sunlight " * 400, PASSAGES[2]]
    encoded = minilm_float32.encode_with_tokens(texts)
    assert np.allclose(encoded.vectors, minilm_float32.encode(texts), atol=1e-5)
    ids = [minilm_float32.tokenizer.encode(t).ids for t in texts]
    counts = [min(len(i), 256) for i in ids]
    table = punctuation(minilm_float32.tokenizer.get_vocab())
    dropped = [int(table[i].sum()) for i in ids]
    assert dropped == [1, 0, 1]  # each sentence's full stop
    # A passage's punctuation is left out of what is stored...
    assert encoded.token_vectors is not None
    assert [len(v) for v in encoded.token_vectors] == [
        1 + (n - d) * BYTES_PER_TOKEN for n, d in zip(counts, dropped, strict=True)
    ]
    # What the reranker encodes for a candidate with nothing stored, in its own passes: the
    # same tokens, each dimension at the same level (or, where the passes' float sums differ
    # at a level's edge, the next one).
    spot = minilm_float32.encode_with_tokens(
        texts, LateInteractionReranker.pass_size, LateInteractionReranker.pass_length_ratio
    ).stored()
    for ours, theirs in zip(spot, encoded.token_vectors, strict=True):
        a, b = unpack(ours), unpack(theirs)
        assert a is not None
        assert b is not None
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 0.5 / 7 + 1e-6
    # ...while a query keeps every token.
    query = "solar power, and wind?"
    (packed,) = minilm_float32.encode_queries_with_tokens([query]).token_vectors
    assert len(packed) == 1 + len(minilm_float32.tokenizer.encode(query).ids) * BYTES_PER_TOKEN


@contextlib.asynccontextmanager
async def keeping_token_vectors(settings: Settings, minilm):
    """A runtime whose local embedder keeps token vectors and whose reranker reads them, as
    QUARRY_RERANKER=late_interaction makes them; yields it with its reranker."""
    from quarry.ingest.embedders import LocalEmbedder

    settings = settings.model_copy(update={"reranker": "late_interaction"})
    embedder = LocalEmbedder(minilm, keep_token_vectors=True)
    try:
        async with open_runtime(settings, embedder=embedder) as rt:
            reranker = rt.search.reranker
            assert isinstance(reranker, LateInteractionReranker)
            yield rt, reranker
    finally:
        await embedder.aclose()


async def token_vectors_by_chunk(rt, project_id) -> dict[str, bytes | None]:
    async with rt.db.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT chunk_id, token_vectors FROM chunk_embeddings WHERE project_id = %s",
                (project_id,),
            )
        ).fetchall()
    return {str(row["chunk_id"]): row["token_vectors"] for row in rows}


async def stored_token_vectors(rt, project_id) -> list[bytes | None]:
    """The project's stored values, one per chunk (these tests keep one model), in no order."""
    return list((await token_vectors_by_chunk(rt, project_id)).values())


async def test_late_interaction_reads_the_token_vectors_indexing_kept(
    ingest_settings: Settings, minilm, admin_principal
) -> None:
    from quarry.ingest.documents import text_source
    from quarry.ingest.token_vectors import BYTES_PER_TOKEN
    from quarry.runtime import background_worker
    from tests.support import settle

    async with keeping_token_vectors(ingest_settings, minilm) as (rt, reranker):
        project = await index_texts(rt, admin_principal, "kept", PASSAGES)
        stored = await stored_token_vectors(rt, project.id)
        assert len(stored) == len(PASSAGES)
        assert all(v is not None and (len(v) - 1) % BYTES_PER_TOKEN == 0 for v in stored)

        query = "electricity from sunlight or wind"
        reranked = await rt.search.search(project.id, SearchRequest(query=query))
        assert reranked.search_metadata.reranked is True
        assert reranker.encoded == 0  # every candidate's token vectors were read
        # The same scores as encoding the candidates on the spot (float rounding aside).
        encoded = await reranker.score(query, [hit.text for hit in reranked.hits])
        assert reranker.encoded == len(reranked.hits)
        for hit, score in zip(reranked.hits, encoded, strict=True):
            assert hit.scores["rerank"] == pytest.approx(score, abs=0.01)
        # BM25 alone embeds no query: the reranker encodes it, and reads the rest.
        lexical = await rt.search.search(
            project.id, SearchRequest(query=query, mode="bm25", rerank=True)
        )
        assert lexical.search_metadata.reranked is True
        assert reranker.encoded == len(reranked.hits)

        # A new document with a known chunk text reuses its vector and token vectors.
        calls = rt.embedder.calls
        source = text_source(
            PASSAGES[0], external_id="again", title="", fmt="txt", metadata={}, tags=()
        )
        await rt.documents.submit(project.id, source)
        async with background_worker(rt, "test"):
            assert (await settle(rt, project.id))["failed"] == 0
        assert rt.embedder.calls == calls
        again = await stored_token_vectors(rt, project.id)
        assert len(again) == len(PASSAGES) + 1
        assert None not in again


async def test_reindex_fills_in_token_vectors_indexing_did_not_keep(
    ingest_settings: Settings, minilm, admin_principal
) -> None:
    from quarry.ingest.embedders import LocalEmbedder
    from quarry.runtime import background_worker

    # Indexed with the rerank stage off (or by a version that kept no token vectors).
    unkept = LocalEmbedder(minilm)
    try:
        off = ingest_settings.model_copy(update={"reranker": "none"})
        async with open_runtime(off, embedder=unkept) as rt:
            project = await index_texts(rt, admin_principal, "unkept", PASSAGES)
            assert await stored_token_vectors(rt, project.id) == [None] * len(PASSAGES)
    finally:
        await unkept.aclose()

    async with keeping_token_vectors(ingest_settings, minilm) as (rt, reranker):
        query = "electricity from sunlight"
        before = await rt.search.search(project.id, SearchRequest(query=query))
        assert reranker.encoded == len(before.hits)  # nothing stored: encoded on the spot
        assert await rt.documents.reindex(project.id) == len(PASSAGES)
        async with background_worker(rt, "test"):  # reembed jobs: no status to wait on
            deadline = time.monotonic() + 60
            while None in (stored := await stored_token_vectors(rt, project.id)):
                assert time.monotonic() < deadline, stored
                await asyncio.sleep(0.1)
        assert len(stored) == len(PASSAGES)
        after = await rt.search.search(project.id, SearchRequest(query=query))
        assert reranker.encoded == len(before.hits)  # read, not encoded
        assert [h.chunk_id for h in after.hits] == [h.chunk_id for h in before.hits]


async def test_a_starting_worker_refills_token_vectors_missing_or_of_an_older_form(
    ingest_settings: Settings, minilm, admin_principal
) -> None:
    from quarry.ingest.documents import REFILL_PRIORITY
    from quarry.ingest.token_vectors import is_current
    from quarry.runtime import background_worker

    async with keeping_token_vectors(ingest_settings, minilm) as (rt, reranker):
        older = await index_texts(rt, admin_principal, "older", PASSAGES)
        current = await index_texts(rt, admin_principal, "current", PASSAGES[:2])
        async with rt.db.pool.connection() as conn:
            # As the first form stored them (format byte 1, then a byte per dimension), and
            # one chunk with none, as a version before late interaction left them.
            await conn.execute(
                "UPDATE chunk_embeddings SET token_vectors = %s WHERE project_id = %s",
                (bytes([1]) + bytes(64 * 5), older.id),
            )
            await conn.execute(
                "UPDATE chunk_embeddings SET token_vectors = NULL WHERE chunk_id ="
                " (SELECT min(chunk_id) FROM chunk_embeddings WHERE project_id = %s)",
                (older.id,),
            )
            # A vector of another model, without token vectors: changing model is left to
            # `quarry reindex`, not refilled.
            await conn.execute(
                "INSERT INTO chunk_embeddings (chunk_id, project_id, model, embedding)"
                " SELECT chunk_id, project_id, 'another-model', embedding FROM chunk_embeddings"
                " WHERE project_id = %s",
                (current.id,),
            )
        query = "electricity from sunlight"
        before = await rt.search.search(older.id, SearchRequest(query=query))
        assert reranker.encoded == len(before.hits)  # not read: encoded on the spot

        # Each of the older project's documents is queued once, behind other work, however
        # often workers start; the current project's are not.
        assert await rt.refill_token_vectors() == len(PASSAGES)
        assert await rt.refill_token_vectors() == len(PASSAGES)
        async with rt.db.pool.connection() as conn:
            queued = await (
                await conn.execute(
                    "SELECT args->>'project_id' AS project, priority FROM procrastinate_jobs"
                    " WHERE status = 'todo'"
                )
            ).fetchall()
        assert queued == [{"project": str(older.id), "priority": REFILL_PRIORITY}] * len(PASSAGES)

        async with background_worker(rt, "test"):  # no `quarry reindex`: the worker refills
            deadline = time.monotonic() + 60
            while not all(map(is_current, stored := await stored_token_vectors(rt, older.id))):
                assert time.monotonic() < deadline, stored
                await asyncio.sleep(0.1)
        assert await rt.refill_token_vectors() == 0
        after = await rt.search.search(older.id, SearchRequest(query=query))
        assert reranker.encoded == len(before.hits)  # read, not encoded
        assert [h.chunk_id for h in after.hits] == [h.chunk_id for h in before.hits]
