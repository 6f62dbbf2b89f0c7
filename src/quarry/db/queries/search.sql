-- Retrieval. {filters} is replaced by the caller's compiled filter (a condition over the
-- chunk ``c`` and its document ``d``, ``TRUE`` without filters); everything else is a
-- parameter. In bm25, {prelimit} is ``%(limit)s`` without a filter (only the top chunks are
-- joined to their documents) and ``ALL`` with one (every scored chunk is checked).

-- name: prepare
-- What a search needs to know first: the project's analyzer, the query's distinct terms as
-- that analyzer makes them (stop words dropped, stems kept, in order of first appearance),
-- how many documents are not searchable yet, and how many chunks are.
SELECT p.analyzer::text AS analyzer,
       array(SELECT t.lexeme FROM unnest(to_tsvector(p.analyzer, %(query)s)) AS t
             ORDER BY t.positions[1]) AS terms,
       (SELECT count(*) FROM documents d
         WHERE d.project_id = p.id AND d.status IN ('pending', 'indexing')) AS indexing,
       coalesce((SELECT s.chunk_count FROM lexical_stats s WHERE s.project_id = p.id), 0)
           AS chunks
FROM projects p
WHERE p.id = %(project_id)s;

-- name: bm25
-- Okapi BM25 with Lucene's idf, log(1 + (N - df + 0.5) / (df + 0.5)), which stays positive.
-- N, df and the average length are the project's, whatever a filter keeps: a filter narrows
-- the candidates, it does not change how rare a term is. Without a filter only the best
-- chunks are looked up; with one, {filters} decides which scored chunks may compete.
--
-- Counting a term's postings for its df reads its whole posting list a second time. The
-- caller may pass the dfs it learnt from an earlier search (%(known_dfs)s, NULL where it
-- knows none) with the version of the statistics they were counted under (%(version)s).
-- They are used only if that version is still the one this statement sees. The version is
-- the statistics row's xmin (the transaction that last changed it) with its two totals;
-- every change of the postings changes that row in the same transaction (see lexical_stats).
-- Every row returned carries the version and each query term's df, for the caller to keep.
WITH stats AS (
    SELECT s.chunk_count::float8 AS n,
           greatest(s.term_count::float8 / greatest(s.chunk_count, 1), 1) AS avgdl,
           concat_ws(':', s.xmin, s.chunk_count, s.term_count) AS version
    FROM lexical_stats s
    WHERE s.project_id = %(project_id)s
), terms AS MATERIALIZED (
    -- One row per query term: its df (known, or the length of its posting list) and idf.
    SELECT q.term, q.ord, f.df, ln(1 + (s.n - f.df + 0.5) / (f.df + 0.5)) AS idf
    FROM unnest(%(terms)s::text[], %(known_dfs)s::bigint[])
         WITH ORDINALITY AS q(term, known, ord)
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT CASE WHEN q.known IS NOT NULL AND s.version = %(version)s::text
                    THEN q.known::float8
                    ELSE (SELECT count(*)::float8 FROM chunk_terms p
                          WHERE p.project_id = %(project_id)s AND p.term = q.term)
               END AS df
    ) f
), counted AS (
    SELECT s.version, array_agg(t.df::bigint ORDER BY t.ord) AS dfs
    FROM terms t CROSS JOIN stats s
    GROUP BY s.version
), scored AS (
    -- Each term's posting list in turn (an index range scan apiece), summed per chunk.
    SELECT p.chunk_id,
           sum(t.idf * p.tf * (%(k1)s::float8 + 1)
               / (p.tf + %(k1)s::float8
                  * (1 - %(b)s::float8 + %(b)s::float8 * p.chunk_terms / s.avgdl))) AS score
    FROM terms t
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT p.chunk_id, p.tf::float8 AS tf, p.chunk_terms::float8 AS chunk_terms
        FROM chunk_terms p
        WHERE p.project_id = %(project_id)s AND p.term = t.term
    ) p
    GROUP BY p.chunk_id
), ranked AS (
    SELECT x.chunk_id, x.score
    FROM scored x
    ORDER BY x.score DESC, x.chunk_id
    LIMIT {prelimit}
)
SELECT x.chunk_id, c.document_id, x.score, k.version, k.dfs
FROM ranked x
CROSS JOIN counted k
JOIN chunks c ON c.id = x.chunk_id
JOIN documents d ON d.id = c.document_id
WHERE {filters}
ORDER BY x.score DESC, x.chunk_id
LIMIT %(limit)s;

-- name: vector
-- Cosine kNN over one model's vectors in this project. {dims} and {model} are literals so the
-- planner can match the partial HNSW index made for that model (see VectorIndexes).
SELECT e.chunk_id, c.document_id, 1 - (e.embedding::vector({dims}) <=> %(embedding)b::vector({dims})) AS score
FROM chunk_embeddings e
JOIN chunks c ON c.id = e.chunk_id
JOIN documents d ON d.id = c.document_id
WHERE e.project_id = %(project_id)s AND e.model = {model} AND {filters}
ORDER BY e.embedding::vector({dims}) <=> %(embedding)b::vector({dims})
LIMIT %(limit)s;

-- name: vector_exact
-- The same answer computed exactly over this project's vectors of the model, for when the HNSW
-- scan leaves fewer rows than asked although more exist (it filters after it searches: a
-- small project in a big table, a narrow filter). A statement of its own, ordered by an
-- expression no index serves. Switching the index off with a setting (enable_indexscan)
-- would not do: psycopg prepares a statement that a connection has run five times, Postgres
-- then settles on a generic plan, and a cached plan keeps its index scan whatever the
-- settings are afterwards. As in bm25, {prelimit} is %(limit)s without a filter (only the
-- nearest chunks are joined to their documents) and ALL with one.
WITH ranked AS (
    SELECT e.chunk_id,
           1 - (e.embedding::vector({dims}) <=> %(embedding)b::vector({dims})) AS score
    FROM chunk_embeddings e
    WHERE e.project_id = %(project_id)s AND e.model = {model}
    ORDER BY score DESC, e.chunk_id
    LIMIT {prelimit}
)
SELECT x.chunk_id, c.document_id, x.score
FROM ranked x
JOIN chunks c ON c.id = x.chunk_id
JOIN documents d ON d.id = c.document_id
WHERE {filters}
ORDER BY x.score DESC, x.chunk_id
LIMIT %(limit)s;

-- name: hits
-- What a result shows: the chunk, its document and a snippet with the query's terms marked.
SELECT c.id AS chunk_id, c.document_id, d.title AS document_title, d.external_id,
       c.text, c.page, c.char_start, c.char_end, c.chunk_index,
       ts_headline(%(analyzer)s::regconfig, c.text,
                   %(tsquery)s::tsquery,
                   'StartSel=<mark>, StopSel=</mark>, MaxWords=30, MinWords=12, '
                   'MaxFragments=2, FragmentDelimiter=" … "') AS highlight
FROM chunks c
JOIN documents d ON d.id = c.document_id
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: chunk_texts
-- What a reranker reads of each chunk: what the retrievers indexed, its context included.
SELECT c.id, indexed_text(c.context, c.text) AS text FROM chunks c
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: chunk_vectors
-- The vectors of given chunks under one embedding model (the context builder's near-duplicate
-- check).
SELECT chunk_id, embedding FROM chunk_embeddings
WHERE project_id = %(project_id)s AND model = %(model)s
  AND chunk_id = ANY(%(chunk_ids)s::bigint[]);
