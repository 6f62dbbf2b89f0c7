"""Search: BM25 and vector kNN side by side, fused, optionally reranked, with highlights.

    query -> analyse (project's analyzer) -> BM25 over the postings  \\
          -> embed (configured model)     -> HNSW kNN over its vectors -> fuse -> rerank -> hits

Both retrievers run concurrently on their own connections. Every stage is timed and the
timings travel back in ``search_metadata``.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from psycopg import sql

from quarry.db.database import Conn, Database
from quarry.db.vector_index import VectorIndexes
from quarry.errors import NotFound, ServiceUnavailable
from quarry.ingest.embedders import Embedder, LocalEmbedder, Vector
from quarry.search.bm25 import TermPostings, term_postings, top_chunks
from quarry.search.filters import compile_filters
from quarry.search.fusion import Candidate, Fused, Fusion, Run, fuse, sink_below
from quarry.search.models import (
    MAX_CANDIDATES,
    Hit,
    Mode,
    SearchMetadata,
    SearchRequest,
    SearchResponse,
)
from quarry.search.rerank import Reranker, blend, rerank_weight, reranked_order
from quarry.settings import Settings

T = TypeVar("T")
MAX_CHUNK_ID = 2**63 - 1
ALL_CHUNKS = ((0, MAX_CHUNK_ID),)  # postings read in one statement
MAX_EF_SEARCH = 1000  # pgvector's largest hnsw.ef_search
WIDEN_MARGIN = 1.5  # a wider HNSW search asks for this much more than the share found promises


@dataclass(frozen=True)
class SearchConfig:
    k1: float = 1.2
    b: float = 0.75
    rrf_k: int = 60
    candidates: int = 100
    ef_search: int = 100
    rerank_depth: int | None = None  # None: the reranker's own
    bm25_split_chunks: int = 20_000  # 0: never split (see Search.bm25_ranges)
    post_filter_depth: int = 1000  # unfiltered BM25 hits checked against a filter first
    post_filter_first: int = 3  # ...the first this many times the limit on their own


def search_config(settings: Settings) -> SearchConfig:
    return SearchConfig(
        k1=settings.bm25_k1,
        b=settings.bm25_b,
        rrf_k=settings.rrf_k,
        candidates=settings.search_candidates,
        ef_search=settings.hnsw_ef_search,
        rerank_depth=settings.rerank_depth,
        bm25_split_chunks=settings.bm25_split_chunks,
    )


class Search:
    def __init__(
        self,
        db: Database,
        embedder: Embedder | None,
        indexes: VectorIndexes,
        config: SearchConfig,
        reranker: Reranker | None = None,
        session_ef_search: int | None = None,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.indexes = indexes
        self.config = config
        self.reranker = reranker
        # hnsw.ef_search as the pool's connections start with it (open_pool's session
        # settings; None: not known, so every kNN sets its own for its transaction). A kNN at
        # that breadth runs as one statement; BEGIN, SET LOCAL and COMMIT around it were three
        # round trips more.
        self.session_ef_search = session_ef_search

    async def search(self, project_id: uuid.UUID, request: SearchRequest) -> SearchResponse:
        began = time.perf_counter()
        timings: dict[str, float] = {}
        if request.rerank and self.reranker is None:
            raise ServiceUnavailable(
                "reranking was asked for but no reranker is configured (QUARRY_RERANKER, or "
                "QUARRY_RERANKER_MODEL for a cross-encoder)"
            )
        rerank = self.reranks(request)
        # Late interaction reads the query's token vectors, which its embedding pass can give.
        query_tokens: list[bytes] | None = (
            [] if rerank and self.reranker and self.reranker.token_vectors_model else None
        )
        # The query's vector needs nothing from the database: its encode (most of the vector
        # retriever's time) starts at once and overlaps the prepare statement's round trip.
        embedding: asyncio.Task[Vector] | None = None
        if request.mode in (Mode.vector, Mode.hybrid):
            embedding = asyncio.ensure_future(self._embed(request.query, timings, query_tokens))
        try:
            prep = await _timed(
                timings,
                "prepare",
                lambda: self.db.fetch_one(
                    "search.prepare", project_id=project_id, query=request.query
                ),
            )
            if prep is None:
                raise NotFound(f"no project {project_id}")
        except BaseException:
            if embedding is not None:
                embedding.cancel()
                await asyncio.gather(embedding, return_exceptions=True)
            raise
        terms: list[str] = prep["terms"]
        depth = request.candidates or self.config.candidates
        # Fusion and reranking look deeper than the page asked for.
        depth = max(depth, request.k, (self.rerank_depth or 0) if rerank else 0)
        filters = compile_filters(request.filters)

        scans: dict[str, str] = {}  # how each retriever answered (search_metadata)

        async def retrieve(depth: int, timings: dict[str, float]) -> dict[str, Run]:
            tasks: dict[str, Awaitable[Run]] = {}
            if request.mode in (Mode.bm25, Mode.hybrid) and terms:
                # A filter by document ids passes at most their chunks: read under the filter
                # at once. Any other is checked against the unfiltered best first.
                post_filter = not (request.filters and request.filters.document_ids)
                tasks["bm25"] = _timed(
                    timings,
                    "bm25",
                    lambda: self._bm25(
                        project_id,
                        terms,
                        filters,
                        depth,
                        self.bm25_ranges(prep),
                        post_filter=post_filter,
                        scans=scans,
                    ),
                )
            if embedding is not None:
                tasks["vector"] = self._vector(
                    project_id, embedding, filters, depth, timings, prep["chunks"], scans
                )
            results = await asyncio.gather(*tasks.values())
            return dict(zip(tasks, results, strict=True))

        def fused_runs(runs: dict[str, Run]) -> Fusion:
            return fuse(
                runs,
                method=request.fusion,
                weights=request.weights.model_dump() if request.weights else None,
                rrf_k=self.config.rrf_k,
                per_document=request.per_document,
                collection_size=prep["chunks"],
            )

        runs = await retrieve(depth, timings)
        started = time.perf_counter()
        fusion = fused_runs(runs)
        fused = fusion.fused
        timings["fuse"] = _ms(started)
        deeper = _deeper(depth, request, runs, len(fused))
        if deeper is not None:
            # Per document, the candidates held fewer documents than the page asks for (long
            # documents fill a run with their chunks): read deeper and add the documents found
            # there after these, whose order and scores stay as they are.
            started = time.perf_counter()
            wide = fused_runs(await retrieve(deeper, {}))
            fused = fused + below(fused, wide.fused)
            timings["widen"] = _ms(started)

        reranked = False
        weights = fusion.weights
        if rerank and fused and self.reranker is not None:
            query_stored = query_tokens[0] if query_tokens else None
            weight = rerank_weight(self.reranker, fusion.agreement)
            fused = await _timed(
                timings,
                "rerank",
                lambda: self._rerank(project_id, request.query, fused, query_stored, weight),
            )
            reranked = True
            if self.reranker.fused_weight:  # blended: the reranker's weight beside the fusion's
                weights = {**weights, "rerank": round(weight, 4)}
        # Highlights mark the query's words as written as well as the analysed terms: the
        # snippet is of the stored text, which `english` reads with its spellings made one
        # (a Greek letter and its name), but ts_headline reads as it is.
        marked_terms = list(dict.fromkeys([*terms, *prep["written_terms"]]))
        hits = await _timed(
            timings,
            "hits",
            lambda: self._page(project_id, prep["analyzer"], marked_terms, fused, request.k),
        )
        timings["total"] = _ms(began)  # the retrievers overlap: less than the stages' sum
        return SearchResponse(
            hits=hits,
            search_metadata=SearchMetadata(
                mode=request.mode,
                query_terms=terms,
                highlight_terms=marked_terms,
                candidates={name: len(run) for name, run in runs.items()},
                fusion=request.fusion,
                weights=weights,
                agreement=fusion.agreement,
                reranked=reranked,
                bm25_scan=scans.get("bm25"),
                vector_scan=scans.get("vector"),
                timings_ms=timings,
                documents_indexing=prep["indexing"],
            ),
        )

    async def _bm25(
        self,
        project_id: uuid.UUID,
        terms: list[str],
        filters: sql.Composable | None,
        limit: int,
        ranges: Sequence[tuple[int, int]],
        *,
        post_filter: bool = True,
        scans: dict[str, str] | None = None,
    ) -> Run:
        """The ``limit`` best chunks by BM25, their postings read over ``ranges`` of chunk
        ids, each range on its own connection (``bm25_ranges``).

        A filter does not change a chunk's score (N, df and the average length are the
        project's), so the best chunks that pass it are the first to pass it in the
        unfiltered order. With ``post_filter``, the unfiltered best ``post_filter_depth``
        (or ``limit``, if more) are checked against the filter first (``check_in_stages``):
        where at least ``limit`` pass (a broad filter), or every scored chunk was checked,
        that is the exact answer, without finding every chunk of the project the filter lets
        compete. Else the postings are read again under the filter. How it answered goes
        into ``scans`` under "bm25": "unfiltered", "post_filter" or "filtered"."""
        scan = "unfiltered" if filters is None else "filtered"
        run: Run | None = None
        if filters is not None and post_filter:
            depth = max(self.config.post_filter_depth, limit)
            ranked = top_chunks(await self._postings(project_id, terms, None, ranges), depth)
            kept = await check_in_stages(
                *ranked,
                limit,
                self.config.post_filter_first * limit,
                lambda ids, scores: self._documents_of(project_id, ids, scores, filters),
            )
            if len(kept) >= limit or ranked[0].size < depth:
                run, scan = kept[:limit], "post_filter"
        if run is None:
            ranked = top_chunks(await self._postings(project_id, terms, filters, ranges), limit)
            run = await self._documents_of(project_id, *ranked, None)
        if scans is not None:
            scans["bm25"] = scan
        return run

    async def _postings(
        self,
        project_id: uuid.UUID,
        terms: list[str],
        filters: sql.Composable | None,
        ranges: Sequence[tuple[int, int]],
    ) -> list[TermPostings]:
        statement = self.db.render("search.bm25_postings", filters=filters or sql.SQL("TRUE"))
        parts = await asyncio.gather(
            *(
                self.db.fetch_all_binary(
                    statement,
                    project_id=project_id,
                    terms=terms,
                    filtered=filters is not None,
                    first_chunk=first,
                    last_chunk=last,
                )
                for first, last in ranges
            )
        )
        return term_postings(parts, self.config.k1, self.config.b)

    async def _documents_of(
        self,
        project_id: uuid.UUID,
        chunk_ids: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64],
        filters: sql.Composable | None,
    ) -> Run:
        """Ranked chunks with their documents, in the order given, less those ``filters``
        leaves out and those deleted since they were ranked."""
        if not chunk_ids.size:
            return []
        statement = (
            "search.chunk_documents"
            if filters is None
            else self.db.render("search.chunk_documents_passing", filters=filters)
        )
        found = await self.db.fetch_all(
            statement, project_id=project_id, chunk_ids=chunk_ids.tolist()
        )
        document_of = {row["chunk_id"]: row["document_id"] for row in found}
        return [
            Candidate(chunk_id, document_of[chunk_id], score)
            for chunk_id, score in zip(chunk_ids.tolist(), scores.tolist(), strict=True)
            if chunk_id in document_of
        ]

    def bm25_ranges(self, prep: dict[str, Any]) -> Sequence[tuple[int, int]]:
        """The ranges of chunk ids whose postings are read, each on its own connection, from
        the prepare statement's row.

        A project of ``bm25_split_chunks`` chunks or more has its query split in two at the
        middle of the terms' chunk ids (``first_chunk`` to ``last_chunk``), so two backends
        read the postings at once: most of a hybrid search's time at 100k chunks, while the
        query's encode (the other retriever) takes a fraction of the other core. Below that,
        one statement is faster than the extra round trip."""
        lo, hi = prep["first_chunk"], prep["last_chunk"]
        if not 0 < self.config.bm25_split_chunks <= prep["chunks"]:
            return ALL_CHUNKS
        if lo is None or hi is None or hi <= lo:
            return ALL_CHUNKS
        middle = (lo + hi) // 2
        return [(lo, middle), (middle + 1, hi)]

    async def _embed(
        self, query: str, timings: dict[str, float], tokens: list[bytes] | None = None
    ) -> Vector:
        """The query's vector; with ``tokens``, its token vectors are added there where the
        embedder keeps them (``LocalEmbedder.embed_query_with_tokens``: the same pass)."""
        if self.embedder is None:
            raise ServiceUnavailable("vector search needs an embedding model; none is loaded")
        embedder = self.embedder
        if tokens is None or not isinstance(embedder, LocalEmbedder):
            return await _timed(timings, "embed", lambda: embedder.embed_query(query))
        local = embedder
        vector, stored = await _timed(
            timings, "embed", lambda: local.embed_query_with_tokens(query)
        )
        if stored is not None:
            tokens.append(stored)
        return vector

    async def _vector(
        self,
        project_id: uuid.UUID,
        embedding: Awaitable[Vector],
        filters: sql.Composable | None,
        limit: int,
        timings: dict[str, float],
        project_chunks: int = 0,
        scans: dict[str, str] | None = None,
    ) -> Run:
        """The ``limit`` nearest chunks. HNSW first; where it leaves fewer rows than asked
        (it filters after it searches) once more at a breadth that promises enough, if that is
        cheaper than reading every vector of the project (``wider_breadth``); else, or if
        still short, an exact scan. How it answered goes into ``scans`` under "vector"."""
        vector = await embedding
        embedder = self.embedder
        assert embedder is not None  # _embed made the vector
        await self.indexes.ensure(embedder.model_id, embedder.dimensions)
        parts = {
            "filters": filters or sql.SQL("TRUE"),
            "dims": sql.Literal(embedder.dimensions),
            "model": sql.Literal(embedder.model_id),
        }
        statement = self.db.render("search.vector", **parts)
        started = time.perf_counter()
        breadth = max(self.config.ef_search, limit)
        params = {"project_id": project_id, "embedding": vector, "limit": limit}
        scan = "hnsw"
        async with self.db.pool.connection() as conn:
            rows = await self._hnsw(conn, statement, params, breadth)
            wider = wider_breadth(len(rows), breadth, limit, project_chunks, self.indexes.m)
            if wider is not None:
                rows = await self._hnsw(conn, statement, params, wider)
                scan = "hnsw_widened"
            if len(rows) < limit:
                # Still short: rank this project's vectors exactly. Correct, and cheap for a
                # small project (it reads every one; SciFact's 10k chunks beside a second
                # project: vector mode p50 39.9 ms against 29.4 alone, bench/README.md).
                exact = self.db.render("search.vector_exact", prelimit=_prelimit(filters), **parts)
                rows = await self.db.fetch_all(exact, conn, **params)
                scan = "exact"
        timings["vector"] = _ms(started)
        if scans is not None:
            scans["vector"] = scan
        return [Candidate(row["chunk_id"], row["document_id"], float(row["score"])) for row in rows]

    async def _hnsw(
        self, conn: Conn, statement: sql.Composed, params: dict[str, Any], breadth: int
    ) -> list[Any]:
        if breadth == self.session_ef_search:
            return await self.db.fetch_all(statement, conn, **params)
        # Another breadth than the connections' own: for this statement only.
        async with conn.transaction():
            await conn.execute(
                sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(breadth))
            )
            return await self.db.fetch_all(statement, conn, **params)

    def reranks(self, request: SearchRequest) -> bool:
        """Whether the rerank stage runs for this request: when asked, and by default in
        hybrid mode. A bm25 or vector search asks for one retriever's ranking, so it is
        reranked only on request."""
        if self.reranker is None or request.rerank is False:
            return False
        return request.rerank is True or request.mode is Mode.hybrid

    @property
    def rerank_depth(self) -> int | None:
        """How many fused candidates the reranker reads; None without one."""
        if self.reranker is None:
            return None
        return self.config.rerank_depth or self.reranker.depth

    async def _rerank(
        self,
        project_id: uuid.UUID,
        query: str,
        fused: list[Fused],
        query_token_vectors: bytes | None = None,
        weight: float = 1.0,
    ) -> list[Fused]:
        assert self.reranker is not None
        head, tail = fused[: self.rerank_depth], fused[self.rerank_depth :]
        chunk_ids = [f.chunk_id for f in head]
        model = self.reranker.token_vectors_model
        if model is None:
            rows = await self.db.fetch_all(
                "search.chunk_texts", project_id=project_id, chunk_ids=chunk_ids
            )
        else:  # in binary: a chunk's token vectors are kilobytes, twice that as hex text
            rows = await self.db.fetch_all_binary(
                "search.chunk_token_vectors",
                project_id=project_id,
                chunk_ids=chunk_ids,
                model=model,
            )
        found = {row["id"]: row for row in rows}
        if len(found) < len(head):  # deleted since retrieval: out of the ranking, not scored
            head = [f for f in head if f.chunk_id in found]
            chunk_ids = [f.chunk_id for f in head]
            if not head:
                return tail
        scores = await self.reranker.score(
            query,
            [found[i]["text"] for i in chunk_ids],
            project_id=project_id,
            token_vectors=None if model is None else [found[i]["token_vectors"] for i in chunk_ids],
            query_token_vectors=query_token_vectors,
        )
        final = blend(scores, [item.score for item in head], self.reranker.fused_weight, weight)
        for rank, (item, score, blended) in enumerate(zip(head, scores, final, strict=True), 1):
            item.ranks["fused"] = rank
            item.scores["rerank"] = score
            item.score = blended
        return reranked_order(head, tail)

    async def _page(
        self, project_id: uuid.UUID, analyzer: str, terms: list[str], fused: list[Fused], k: int
    ) -> list[Hit]:
        """The first ``k`` fused candidates that still exist as hits: a chunk deleted since
        retrieval (its document re-indexed or removed meanwhile) is skipped and the next one
        read in its place, so a page is short only when the candidates run out."""
        hits: list[Hit] = []
        taken = 0
        while len(hits) < k and taken < len(fused):
            batch = fused[taken : taken + k - len(hits)]
            taken += len(batch)
            hits += await self._hits(project_id, analyzer, terms, batch)
        return hits

    async def _hits(
        self, project_id: uuid.UUID, analyzer: str, terms: list[str], page: list[Fused]
    ) -> list[Hit]:
        if not page:
            return []
        rows = await self.db.fetch_all(
            "search.hits",
            project_id=project_id,
            analyzer=analyzer,
            tsquery=tsquery(terms),
            chunk_ids=[f.chunk_id for f in page],
        )
        by_id = {row["chunk_id"]: row for row in rows}
        hits = []
        for item in page:
            row = by_id.get(item.chunk_id)
            if row is None:  # deleted between retrieval and now
                continue
            row["highlight"] = marked(row["highlight"]) if terms else _snippet(row["text"])
            hits.append(Hit(**row, score=item.score, ranks=item.ranks, scores=item.scores))
        return hits


def tsquery(terms: list[str]) -> str:
    """Analysed terms as a tsquery that matches any of them, taken as they are (quoted, so
    they are not analysed a second time)."""
    if not terms:
        return ""
    quoted = ("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in terms)
    return " | ".join(quoted)


async def check_in_stages(
    chunk_ids: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    limit: int,
    first: int,
    check: Callable[[npt.NDArray[np.int64], npt.NDArray[np.float64]], Awaitable[Run]],
) -> Run:
    """The ranked chunks that pass ``check``, in order: the first ``first`` on their own, and
    the rest only if fewer than ``limit`` of those passed.

    The check costs a key lookup per chunk (about 11 µs at 100k chunks), so under a filter
    that half the project passes, 300 checked for 100 wanted are enough, not the 1,000 a
    narrower filter may need (bench/README.md)."""
    kept = list(await check(chunk_ids[:first], scores[:first]))
    if len(kept) < limit and chunk_ids.size > first:
        kept += await check(chunk_ids[first:], scores[first:])
    return kept


def _deeper(depth: int, request: SearchRequest, runs: dict[str, Run], found: int) -> int | None:
    """The depth of a second retrieval for a per-document page that came back short, or None:
    only where some retriever filled its run (the others found all they could) and a deeper
    run is allowed."""
    if not request.per_document or found >= request.k or depth >= MAX_CANDIDATES:
        return None
    if not any(len(run) >= depth for run in runs.values()):
        return None
    return min(MAX_CANDIDATES, depth * 4)


def below(page: list[Fused], more: list[Fused]) -> list[Fused]:
    """The candidates of ``more`` whose documents ``page`` lacks, in their order, their scores
    moved as a block below the page's lowest."""
    seen = {f.document_id for f in page}
    extra = [f for f in more if f.document_id not in seen]
    if page:
        sink_below(page[-1].score, extra)
    return extra


def marked(headline: str) -> str:
    """ts_headline's snippet (search.hits) as HTML: the text escaped (a document's own markup
    is text here, never markup), the query's terms in <mark>."""
    escaped = html.escape(headline, quote=False)
    return escaped.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


MARK_START, MARK_END = "\ue000", "\ue001"  # what search.hits marks terms with


def _snippet(text: str, words: int = 30) -> str:
    """The start of a chunk, as HTML (escaped), when the query has no terms to mark."""
    parts = text.split()
    return html.escape(" ".join(parts[:words]) + (" …" if len(parts) > words else ""), quote=False)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def wider_breadth(found: int, breadth: int, limit: int, project_chunks: int, m: int) -> int | None:
    """The breadth of a second HNSW search when the first, ``breadth`` wide, left ``found`` of
    ``limit`` rows; None where an exact scan is the better next step.

    HNSW filters after it searches: of the ``breadth`` nearest vectors of the index, only
    ``found`` belonged to the project and passed the filter. A search that much wider (with a
    margin) should find ``limit`` of them, if pgvector allows that breadth (``MAX_EF_SEARCH``)
    and it compares fewer vectors than the project holds: about breadth times the 2m links of
    the graph's lowest layer (``m`` as the index was built). A small project beside a big
    one, or a filter that passes few chunks, is ranked exactly instead."""
    if found >= limit or found == 0:
        return None
    wider = math.ceil(limit * breadth / found * WIDEN_MARGIN)
    if wider > MAX_EF_SEARCH or wider * 2 * m > project_chunks:
        return None
    return wider


def _prelimit(filters: sql.Composable | None) -> sql.Composable:
    """How many ranked chunks vector_exact joins to their documents before {filters} applies:
    only the page asked for when nothing is filtered, every one when a filter may drop some."""
    return sql.Placeholder("limit") if filters is None else sql.SQL("ALL")


async def _timed(timings: dict[str, float], name: str, call: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    try:
        return await call()
    finally:
        timings[name] = _ms(started)
