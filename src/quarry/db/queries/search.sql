-- Retrieval. {filters} is replaced by the caller's compiled filter (a condition over the
-- chunk ``c`` and its document ``d``, ``TRUE`` without filters); everything else is a
-- parameter.

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
-- the candidates, it does not change how rare a term is. Every chunk holding a query term is
-- scored, and {filters} decides which may compete (a search without filters uses bm25_top).
WITH stats AS (
    SELECT s.chunk_count::float8 AS n,
           greatest(s.term_count::float8 / greatest(s.chunk_count, 1), 1) AS avgdl
    FROM lexical_stats s
    WHERE s.project_id = %(project_id)s
), terms AS MATERIALIZED (
    -- One row per query term: its idf, from the length of its posting list (computed once,
    -- not per posting).
    SELECT q.term, ln(1 + (s.n - f.df + 0.5) / (f.df + 0.5)) AS idf
    FROM unnest(%(terms)s::text[]) AS q(term)
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT count(*)::float8 AS df FROM chunk_terms p
        WHERE p.project_id = %(project_id)s AND p.term = q.term
    ) f
    WHERE f.df > 0
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
)
SELECT x.chunk_id, c.document_id, x.score
FROM scored x
JOIN chunks c ON c.id = x.chunk_id
JOIN documents d ON d.id = c.document_id
WHERE {filters}
ORDER BY x.score DESC, x.chunk_id
LIMIT %(limit)s;

-- name: bm25_top
-- The same BM25 (as bm25 above: same N, average length, idf and score), for the best
-- %(limit)s chunks of a search without filters, reading less than every posting of every
-- term (MaxScore, Turtle and Flood 1995). A term adds at most idf * (k1 + 1) to a chunk's
-- score. The rarest terms' postings, up to %(seed)s of them, give each of their chunks a
-- partial score, a lower bound of its score; the limit-th best of those, theta, is then at
-- most the limit-th best score of all. Taking terms from the least to the most valuable, those
-- whose bounds together stay below theta are "lazy": a chunk holding only lazy terms cannot
-- reach the top. So only the other terms' posting lists are read in full; their chunks are the
-- candidates, and a candidate that could still reach theta looks its lazy terms up by key.
-- The result equals bm25's first %(limit)s rows (test_bm25_reference checks both).
WITH stats AS (
    SELECT s.chunk_count::float8 AS n,
           greatest(s.term_count::float8 / greatest(s.chunk_count, 1), 1) AS avgdl
    FROM lexical_stats s
    WHERE s.project_id = %(project_id)s
), terms AS MATERIALIZED (
    SELECT q.term, f.df, ln(1 + (s.n - f.df + 0.5) / (f.df + 0.5)) AS idf,
           ln(1 + (s.n - f.df + 0.5) / (f.df + 0.5)) * (%(k1)s::float8 + 1) AS bound
    FROM unnest(%(terms)s::text[]) AS q(term)
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT count(*)::float8 AS df FROM chunk_terms p
        WHERE p.project_id = %(project_id)s AND p.term = q.term
    ) f
    WHERE f.df > 0
), ordered AS MATERIALIZED (
    SELECT t.*,
           sum(t.df) OVER (ORDER BY t.df, t.term) - t.df AS rarer_postings,
           sum(t.bound) OVER (ORDER BY t.bound, t.term) AS bounds_so_far
    FROM terms t
), seed AS (
    SELECT p.chunk_id,
           sum(t.idf * p.tf * (%(k1)s::float8 + 1)
               / (p.tf + %(k1)s::float8
                  * (1 - %(b)s::float8 + %(b)s::float8 * p.chunk_terms / s.avgdl))) AS partial
    FROM ordered t
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT p.chunk_id, p.tf::float8 AS tf, p.chunk_terms::float8 AS chunk_terms
        FROM chunk_terms p
        WHERE p.project_id = %(project_id)s AND p.term = t.term
    ) p
    WHERE t.rarer_postings < %(seed)s
    GROUP BY p.chunk_id
), threshold AS MATERIALIZED (
    -- A hair below the limit-th partial score, so that float rounding of a sum taken in
    -- another order can never exclude a chunk that ties it.
    SELECT coalesce((SELECT x.partial FROM seed x ORDER BY x.partial DESC
                     OFFSET %(limit)s - 1 LIMIT 1), 0) * (1 - 1e-9) AS theta
), split AS MATERIALIZED (
    SELECT t.*, t.bounds_so_far < h.theta AS lazy FROM ordered t CROSS JOIN threshold h
), scanned AS (
    SELECT p.chunk_id,
           sum(t.idf * p.tf * (%(k1)s::float8 + 1)
               / (p.tf + %(k1)s::float8
                  * (1 - %(b)s::float8 + %(b)s::float8 * p.chunk_terms / s.avgdl))) AS score
    FROM split t
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT p.chunk_id, p.tf::float8 AS tf, p.chunk_terms::float8 AS chunk_terms
        FROM chunk_terms p
        WHERE p.project_id = %(project_id)s AND p.term = t.term
    ) p
    WHERE NOT t.lazy
    GROUP BY p.chunk_id
), lazy AS MATERIALIZED (
    SELECT count(*) AS terms, coalesce(sum(t.bound), 0) AS bound FROM split t WHERE t.lazy
), scored AS (
    SELECT x.chunk_id,
           x.score + CASE WHEN l.terms = 0 THEN 0 ELSE coalesce((
               SELECT sum(t.idf * p.tf * (%(k1)s::float8 + 1)
                          / (p.tf + %(k1)s::float8
                             * (1 - %(b)s::float8 + %(b)s::float8 * p.chunk_terms / s.avgdl)))
               FROM split t
               CROSS JOIN stats s
               JOIN chunk_terms p ON p.project_id = %(project_id)s AND p.term = t.term
                                 AND p.chunk_id = x.chunk_id
               WHERE t.lazy), 0) END AS score
    FROM scanned x
    CROSS JOIN threshold h
    CROSS JOIN lazy l
    -- Only a chunk that its lazy terms could still lift to theta is looked at further.
    WHERE x.score + l.bound >= h.theta
), ranked AS (
    SELECT x.chunk_id, x.score
    FROM scored x
    ORDER BY x.score DESC, x.chunk_id
    LIMIT %(limit)s
)
SELECT x.chunk_id, c.document_id, x.score, l.terms AS lazy_terms
FROM ranked x
JOIN chunks c ON c.id = x.chunk_id
CROSS JOIN lazy l
ORDER BY x.score DESC, x.chunk_id;

-- name: vector
-- Cosine kNN over one model's vectors in this project. {dims} and {model} are literals so the
-- planner can match the partial HNSW index made for that model (see VectorIndexes).
SELECT e.chunk_id, c.document_id, 1 - (e.embedding::vector({dims}) <=> %(embedding)s::vector({dims})) AS score
FROM chunk_embeddings e
JOIN chunks c ON c.id = e.chunk_id
JOIN documents d ON d.id = c.document_id
WHERE e.project_id = %(project_id)s AND e.model = {model} AND {filters}
ORDER BY e.embedding::vector({dims}) <=> %(embedding)s::vector({dims})
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
