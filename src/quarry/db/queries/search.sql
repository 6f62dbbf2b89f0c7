-- Retrieval. {filters} is replaced by the caller's compiled filter (a condition over the
-- chunk ``c`` and its document ``d``, ``TRUE`` without filters); everything else is a
-- parameter.

-- name: prepare
-- What a search needs to know first: the project's analyzer, the query's distinct terms as
-- that analyzer makes them (search_terms: stop words dropped, stems kept, in order of first
-- appearance), its terms as written (to_tsvector alone: `english` makes spellings one, and a
-- snippet of the stored text shows the words as written, so highlights mark both),
-- how many documents are not searchable yet, how many chunks are, and the lowest and highest
-- chunk ids among the terms' postings, rows and blocks (a few index probes
-- per term; NULL without postings), where a large project's BM25 query is split between
-- connections (Search.bm25_ranges).
WITH q AS (
    SELECT p.id, p.analyzer,
           array(SELECT t.lexeme FROM unnest(search_terms(p.analyzer, %(query)s)) AS t
                 ORDER BY t.positions[1]) AS terms,
           array(SELECT t.lexeme FROM unnest(to_tsvector(p.analyzer, %(query)s)) AS t)
               AS written_terms
    FROM projects p
    WHERE p.id = %(project_id)s
)
SELECT q.analyzer::text AS analyzer, q.terms, q.written_terms,
       (SELECT count(*) FROM documents d
         WHERE d.project_id = q.id AND d.status IN ('pending', 'indexing')) AS indexing,
       coalesce((SELECT s.chunk_count FROM lexical_stats s WHERE s.project_id = q.id), 0)
           AS chunks,
       r.lo AS first_chunk, r.hi AS last_chunk
FROM q
CROSS JOIN LATERAL (
    SELECT least(min(x.lo), min(y.lo)) AS lo, greatest(max(x.hi), max(y.hi)) AS hi
    FROM unnest(q.terms) AS t(term)
    CROSS JOIN LATERAL (
        SELECT min(p.chunk_id) AS lo, max(p.chunk_id) AS hi FROM chunk_terms p
        WHERE p.project_id = q.id AND p.term = t.term
    ) x
    CROSS JOIN LATERAL (
        SELECT min(b.first_chunk) AS lo, max(b.last_chunk) AS hi FROM term_blocks b
        WHERE b.project_id = q.id AND b.term = t.term
    ) y
) r;

-- name: bm25_postings
-- What Okapi BM25 needs of each query term, for the caller to score (quarry.search.bm25):
-- the project's chunk count and average chunk length, and the term's postings, each list as
-- two packed binary strings in the same order (the sum does not rely on any order): the
-- chunk ids (int8send, end to end), and each posting's shape, the chunk's length in terms
-- shifted 32 bits above the term's frequency there. A term's postings are in two places
-- (migration 0010): rows of chunk_terms, packed here with their count (df), and blocks
-- already packed, joined as they are (packed_ids, packed_shapes); the caller drops from the
-- blocks the chunks deleted since they were packed (deleted, on the first term's row only)
-- and counts the rest into df.
-- Packed bytes cost Postgres about two thirds of array_agg and array_send, and a block read
-- is a copy (bench/README.md).
-- first_chunk..last_chunk bounds the chunk ids read (the index range scan is on
-- project, term, chunk id), so the caller can split a large query between connections; df
-- is then counted per part and summed. Blocks are sent whole where their range of ids meets
-- the part's, with the part's bounds, and the caller keeps the postings within them: each
-- posting is then counted by the one part whose range holds it, even by two connections
-- reading a moment apart across a pack (one sees the rows, the other the block). N,
-- df and the average length are the project's, whatever a filter keeps: a filter (the
-- filtered parameter, with its condition in place of the filters fragment) narrows which
-- chunks compete, the chunks that pass it forming one hashed set that every row of
-- chunk_terms probes, and, where the project has blocks, sent as the list of ids that may
-- compete (allowed, on the first term's row only), for the caller to apply to the blocks;
-- it does not change how rare a term is.
WITH allowed_chunks AS MATERIALIZED (
    -- The chunks a filter lets compete, found once for the whole statement (for every
    -- term's rows and for the blocks); without a filter nothing reads it, and it is never run.
    SELECT c.id FROM chunks c
    JOIN documents d ON d.id = c.document_id
    WHERE c.project_id = %(project_id)s AND {filters}
), stats AS (
    SELECT s.chunk_count::float8 AS n,
           greatest(s.term_count::float8 / greatest(s.chunk_count, 1), 1) AS avgdl,
           (SELECT string_agg(int8send(x.chunk_id), ''::bytea) FROM packed_deletions x
             WHERE x.project_id = %(project_id)s) AS deleted,
           CASE WHEN %(filtered)s::boolean
                     AND EXISTS (SELECT 1 FROM term_blocks b WHERE b.project_id = %(project_id)s)
                THEN coalesce((SELECT string_agg(int8send(a.id), ''::bytea)
                               FROM allowed_chunks a), ''::bytea)
           END AS allowed
    FROM lexical_stats s
    WHERE s.project_id = %(project_id)s
)
SELECT q.ord, s.n, s.avgdl,
       -- The lists are the statement's, not a term's: sent once, on the first term's row.
       CASE WHEN q.ord = 1 THEN s.deleted END AS deleted,
       CASE WHEN q.ord = 1 THEN s.allowed END AS allowed,
       a.df, a.chunk_ids, a.shapes,
       %(first_chunk)s::int8 AS first_chunk, %(last_chunk)s::int8 AS last_chunk,
       k.chunk_ids AS packed_ids, k.shapes AS packed_shapes
FROM unnest(%(terms)s::text[]) WITH ORDINALITY AS q(term, ord)
CROSS JOIN stats s
CROSS JOIN LATERAL (
    -- One index range scan per term: its df and its postings together.
    SELECT count(*) AS df,
           string_agg(int8send(p.chunk_id), ''::bytea) FILTER (WHERE p.competes) AS chunk_ids,
           string_agg(int8send((p.chunk_terms::int8 << 32) | p.tf), ''::bytea)
               FILTER (WHERE p.competes) AS shapes
    FROM (
        SELECT p.chunk_id, p.tf, p.chunk_terms,
               -- Without a filter every chunk competes, and the set is never built.
               (NOT %(filtered)s::boolean
                OR p.chunk_id IN (SELECT a.id FROM allowed_chunks a)) AS competes
        FROM chunk_terms p
        WHERE p.project_id = %(project_id)s AND p.term = q.term
          AND p.chunk_id BETWEEN %(first_chunk)s AND %(last_chunk)s
        OFFSET 0  -- kept a subquery: competes is computed once per row, not per aggregate
    ) p
) a
CROSS JOIN LATERAL (
    SELECT string_agg(b.chunk_ids, ''::bytea ORDER BY b.first_chunk) AS chunk_ids,
           string_agg(b.shapes, ''::bytea ORDER BY b.first_chunk) AS shapes
    FROM term_blocks b
    WHERE b.project_id = %(project_id)s AND b.term = q.term
      AND b.first_chunk <= %(last_chunk)s AND b.last_chunk >= %(first_chunk)s
) k
ORDER BY q.ord;

-- name: chunk_documents
-- The documents of ranked chunks (a chunk deleted since it was ranked is left out).
SELECT c.id AS chunk_id, c.document_id FROM chunks c
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: chunk_documents_passing
-- The same, for the ranked chunks that pass {filters}. Each chunk's document is looked up by
-- its key (the subquery is kept one by OFFSET 0): joined, Postgres may hash every document
-- of the project to check a thousand chunks.
SELECT c.id AS chunk_id, c.document_id FROM chunks c
CROSS JOIN LATERAL (
    SELECT FROM documents d WHERE d.id = c.document_id AND {filters} OFFSET 0
) passes
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

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
-- settings are afterwards. {prelimit} is %(limit)s without a filter (only the
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
-- What a result shows: the chunk, its document and a snippet with the query's terms marked,
-- by two private-use characters (taken out of the text first, so only the marks are them):
-- the caller escapes the snippet for HTML and puts <mark> in their place.
SELECT c.id AS chunk_id, c.document_id, d.title AS document_title, d.external_id,
       c.text, c.page, c.char_start, c.char_end, c.chunk_index,
       ts_headline(%(analyzer)s::regconfig,
                   translate(c.text, U&'\E000\E001', ''),
                   %(tsquery)s::tsquery,
                   'StartSel=' || U&'\E000' || ', StopSel=' || U&'\E001' || ', '
                   'MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "')
           AS highlight
FROM chunks c
JOIN documents d ON d.id = c.document_id
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: chunk_texts
-- What a reranker reads of each chunk: what the retrievers indexed, its context included.
SELECT c.id, indexed_text(c.context, c.text) AS text FROM chunks c
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: chunk_token_vectors
-- What late interaction reads of each chunk: its stored token vectors under the model (NULL
-- where not kept), and the text it encodes where they are missing.
SELECT c.id, indexed_text(c.context, c.text) AS text, e.token_vectors
FROM chunks c
LEFT JOIN chunk_embeddings e ON e.chunk_id = c.id AND e.model = %(model)s
WHERE c.project_id = %(project_id)s AND c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: chunk_vectors
-- The vectors of given chunks under one embedding model (the context builder's near-duplicate
-- check).
SELECT chunk_id, embedding FROM chunk_embeddings
WHERE project_id = %(project_id)s AND model = %(model)s
  AND chunk_id = ANY(%(chunk_ids)s::bigint[]);
