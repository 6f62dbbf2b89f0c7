-- name: reusable_embeddings
-- Vectors this project already has for these chunk texts, made by this model, with their
-- token vectors where kept (NULL where not).
SELECT DISTINCT ON (c.content_hash) c.content_hash, e.embedding, e.token_vectors
FROM chunks c
JOIN chunk_embeddings e ON e.chunk_id = c.id AND e.model = %(model)s
WHERE c.project_id = %(project_id)s AND c.content_hash = ANY(%(hashes)s::bytea[]);

-- name: delete_for_documents
DELETE FROM chunks
WHERE project_id = %(project_id)s AND document_id = ANY(%(document_ids)s::uuid[]);

-- name: insert_many
-- The chunks of one or more documents of a project, their vectors and their postings in one
-- statement (one row per chunk in each array). Each chunk's indexed text (its context, then
-- its text) is analysed here with the project's analyzer (search_terms, read under the lock
-- documents.lock_for_write holds), so the query side analyses text the same way. Vectors
-- travel in binary (%(embeddings)b): as text, each of 384 floats would be formatted by Python
-- and parsed again by Postgres, and so do token vectors (NULL where not kept). Returns each
-- document's chunk and term counts.
WITH analysed AS (
    SELECT c.*,
           search_terms((SELECT p.analyzer FROM projects p WHERE p.id = %(project_id)s),
                        indexed_text(c.context, c.text)) AS terms
    FROM unnest(%(document_id)s::uuid[], %(chunk_index)s::int[], %(text)s::text[],
                %(context)s::text[], %(char_start)s::int[], %(char_end)s::int[],
                %(page)s::int[], %(token_count)s::int[], %(content_hash)s::bytea[],
                %(embeddings)b::vector[], %(token_vectors)b::bytea[])
         AS c(document_id, chunk_index, text, context, char_start, char_end, page,
              token_count, content_hash, embedding, token_vectors)
), inserted AS (
    INSERT INTO chunks (project_id, document_id, chunk_index, text, context, char_start,
                        char_end, page, token_count, content_hash, term_count)
    SELECT %(project_id)s, a.document_id, a.chunk_index, a.text, a.context, a.char_start,
           a.char_end, a.page, a.token_count, a.content_hash, term_count(a.terms)
    FROM analysed a
    RETURNING id, document_id, chunk_index, term_count
), postings AS (
    INSERT INTO chunk_terms (project_id, term, chunk_id, tf, chunk_terms)
    SELECT %(project_id)s, t.term, i.id, t.tf, i.term_count
    FROM inserted i
    JOIN analysed a USING (document_id, chunk_index)
    CROSS JOIN LATERAL postings(a.terms) AS t
), vectors AS (
    INSERT INTO chunk_embeddings (chunk_id, project_id, model, embedding, token_vectors)
    SELECT i.id, %(project_id)s, %(model)s, a.embedding, a.token_vectors
    FROM inserted i
    JOIN analysed a USING (document_id, chunk_index)
)
SELECT document_id, count(*) AS chunks, coalesce(sum(term_count), 0) AS terms
FROM inserted
GROUP BY document_id;

-- name: insert_embeddings
INSERT INTO chunk_embeddings (chunk_id, project_id, model, embedding, token_vectors)
SELECT chunk_id, %(project_id)s, %(model)s, embedding, token_vectors
FROM unnest(%(chunk_ids)s::bigint[], %(embeddings)b::vector[], %(token_vectors)b::bytea[])
     AS e(chunk_id, embedding, token_vectors)
ON CONFLICT (chunk_id, model)
DO UPDATE SET embedding = excluded.embedding, token_vectors = excluded.token_vectors;

-- name: add_stats
-- Deltas may be negative. CHECK constraints apply to the proposed row before ON CONFLICT
-- does, so the row to insert never goes below zero (a negative delta implies the row exists).
INSERT INTO lexical_stats (project_id, chunk_count, term_count)
VALUES (%(project_id)s, greatest(%(chunks)s::bigint, 0), greatest(%(terms)s::bigint, 0))
ON CONFLICT (project_id) DO UPDATE
SET chunk_count = lexical_stats.chunk_count + %(chunks)s::bigint,
    term_count = lexical_stats.term_count + %(terms)s::bigint;

-- name: list_for_document
SELECT c.id, c.chunk_index, c.text, c.context, c.char_start, c.char_end, c.page, c.token_count,
       encode(c.content_hash, 'hex') AS content_hash, c.term_count,
       array(SELECT e.model FROM chunk_embeddings e WHERE e.chunk_id = c.id ORDER BY e.model)
           AS embedding_models
FROM chunks c
WHERE c.project_id = %(project_id)s AND c.document_id = %(document_id)s
ORDER BY c.chunk_index;

-- name: texts_missing_model
-- What the model embeds of each chunk that has no vector of this model yet, or, where token
-- vectors are kept (%(token_vectors)s), none of those in the current form (its first byte,
-- %(token_format)s).
SELECT c.id, indexed_text(c.context, c.text) AS text FROM chunks c
WHERE c.project_id = %(project_id)s AND c.document_id = %(document_id)s
  AND NOT EXISTS (SELECT 1 FROM chunk_embeddings e
                  WHERE e.chunk_id = c.id AND e.model = %(model)s
                    AND (substr(e.token_vectors, 1, 1) = %(token_format)s::bytea
                         OR NOT %(token_vectors)s))
ORDER BY c.chunk_index;

-- name: drop_other_models
DELETE FROM chunk_embeddings e
USING chunks c
WHERE c.id = e.chunk_id AND c.project_id = %(project_id)s AND c.document_id = %(document_id)s
  AND e.model <> %(model)s;

-- name: drop_postings
-- Re-analysing a project (its analyzer changed): first its postings go...
DELETE FROM chunk_terms WHERE project_id = %(project_id)s;

-- name: reanalyse
-- ...then every chunk is analysed again, its length and postings written anew.
WITH analysed AS (
    SELECT c.id, search_terms(%(analyzer)s::regconfig, indexed_text(c.context, c.text)) AS terms
    FROM chunks c
    WHERE c.project_id = %(project_id)s
), counted AS (
    SELECT a.id, a.terms, term_count(a.terms) AS n
    FROM analysed a
), updated AS (
    UPDATE chunks c SET term_count = x.n FROM counted x WHERE c.id = x.id
), postings AS (
    INSERT INTO chunk_terms (project_id, term, chunk_id, tf, chunk_terms)
    SELECT %(project_id)s, t.term, x.id, t.tf, x.n
    FROM counted x CROSS JOIN LATERAL postings(x.terms) AS t
    WHERE x.n > 0
)
SELECT count(*) AS chunks FROM counted;

-- name: restat
-- After re-analysis: documents' and the project's term totals from their chunks.
WITH per_document AS (
    UPDATE documents d
    SET term_count = coalesce((SELECT sum(c.term_count) FROM chunks c
                               WHERE c.document_id = d.id), 0)
    WHERE d.project_id = %(project_id)s
)
INSERT INTO lexical_stats (project_id, chunk_count, term_count)
SELECT %(project_id)s, count(*), coalesce(sum(c.term_count), 0)
FROM chunks c WHERE c.project_id = %(project_id)s
ON CONFLICT (project_id) DO UPDATE
SET chunk_count = excluded.chunk_count, term_count = excluded.term_count;
