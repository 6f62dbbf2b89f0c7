-- name: upsert
-- A new document; a new version of an existing one when what is indexed changed: its content,
-- its format, or a title given and different (a chunk is embedded with its document's title;
-- no title means the one the parser finds, which is then kept); or, when only what describes
-- it changed (metadata, tags, its source's name or kind), those updated in place, with the
-- same version, status and chunks. Nothing changed returns no row. previous_version is the
-- version before this statement (a subquery reads the statement's snapshot, which does not
-- see the statement's own change). It is null where the row is new to that snapshot: created
-- by a submission that committed while this one waited on it (Documents._write takes it as
-- version 1).
INSERT INTO documents (project_id, external_id, source_kind, source, title, format,
                       content_hash, size_bytes, metadata, tags)
VALUES (%(project_id)s, %(external_id)s, %(source_kind)s, %(source)s, %(title)s, %(format)s,
        %(content_hash)s, %(size_bytes)s, %(metadata)s, %(tags)s)
ON CONFLICT (project_id, external_id) DO UPDATE
SET source_kind = excluded.source_kind, source = excluded.source, format = excluded.format,
    content_hash = excluded.content_hash, size_bytes = excluded.size_bytes,
    metadata = excluded.metadata, tags = excluded.tags, updated_at = now(),
    (title, version, status, error, error_code, attempts) = (
        SELECT CASE WHEN new_version THEN excluded.title ELSE documents.title END,
               documents.version + new_version::int,
               CASE WHEN new_version THEN 'pending' ELSE documents.status END,
               CASE WHEN new_version THEN NULL ELSE documents.error END,
               CASE WHEN new_version THEN NULL ELSE documents.error_code END,
               CASE WHEN new_version THEN 0 ELSE documents.attempts END
        FROM (SELECT documents.content_hash <> excluded.content_hash
                     OR documents.format <> excluded.format
                     OR (excluded.title <> '' AND excluded.title <> documents.title)
                     AS new_version) AS versioning
    )
WHERE (excluded.title <> '' AND excluded.title <> documents.title)
   OR (documents.content_hash, documents.format, documents.source_kind, documents.source,
       documents.metadata, documents.tags)
      IS DISTINCT FROM (excluded.content_hash, excluded.format, excluded.source_kind,
                        excluded.source, excluded.metadata, excluded.tags)
RETURNING *, (xmax = 0) AS inserted,
          (SELECT old.version FROM documents old WHERE old.id = documents.id) AS previous_version;

-- name: lock_by_external_ids
-- The documents a submission is about to version, locked until it commits, so the content
-- each replaces is the content read here. In order of id, the order the chunk writer locks
-- documents in (documents.lock_for_write), so neither waits for the other in a circle.
SELECT external_id, content_hash FROM documents
WHERE project_id = %(project_id)s AND external_id = ANY(%(external_ids)s::text[])
ORDER BY id
FOR NO KEY UPDATE;

-- name: get
SELECT * FROM documents WHERE project_id = %(project_id)s AND id = %(document_id)s;

-- name: get_by_external_ids
SELECT * FROM documents
WHERE project_id = %(project_id)s AND external_id = ANY(%(external_ids)s::text[]);

-- name: list
-- Newest first, keyset-paginated by (created_at, id).
SELECT * FROM documents
WHERE project_id = %(project_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(before_created)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_created)s::timestamptz, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: ids_by_status
SELECT id FROM documents WHERE project_id = %(project_id)s AND status = %(status)s;

-- name: all_ids
SELECT id FROM documents WHERE project_id = %(project_id)s;

-- name: stale_token_vectors
-- Documents with a chunk whose vector from %(model)s has no token vectors in the current form
-- (first byte %(token_format)s). substr reads only the first bytes of a value stored apart.
SELECT DISTINCT c.project_id, c.document_id
FROM chunk_embeddings e
JOIN chunks c ON c.id = e.chunk_id
WHERE e.model = %(model)s
  AND (e.token_vectors IS NULL OR substr(e.token_vectors, 1, 1) <> %(token_format)s::bytea);

-- name: counts
SELECT status, count(*) AS n, coalesce(sum(chunk_count), 0) AS chunks
FROM documents WHERE project_id = %(project_id)s GROUP BY status;

-- name: claim
-- Take a document for indexing, unless what is stored is already its current content.
UPDATE documents
SET status = 'indexing', attempts = attempts + 1, updated_at = now()
WHERE project_id = %(project_id)s AND id = %(document_id)s
  AND (status <> 'complete' OR indexed_hash IS DISTINCT FROM content_hash)
RETURNING id, project_id, content_hash, format, title, version;

-- name: describe
-- New metadata or tags (null: as they are) in place: no new version, nothing to re-index.
UPDATE documents
SET metadata = coalesce(%(metadata)s, metadata), tags = coalesce(%(tags)s::text[], tags),
    updated_at = now()
WHERE project_id = %(project_id)s AND id = %(document_id)s
RETURNING *;

-- name: lock
SELECT id, content_hash, status, chunk_count, term_count FROM documents
WHERE project_id = %(project_id)s AND id = %(document_id)s
FOR UPDATE;

-- name: lock_for_write
-- The documents a write replaces, locked in id order (concurrent writers of overlapping sets
-- then wait for each other instead of deadlocking). This transaction commits asynchronously:
-- each job's own commit follows and is synchronous, so a crash loses nothing, and the write
-- saves a disk flush. The project row is share-locked so its analyzer cannot change until
-- these documents' postings are written (a change re-analyses the project under an exclusive
-- lock, see Projects.update).
SELECT d.id, d.content_hash, d.version, d.chunk_count, d.term_count,
       set_config('synchronous_commit', 'off', true) AS commit_mode
FROM documents d
JOIN projects p ON p.id = d.project_id
WHERE d.project_id = %(project_id)s AND d.id = ANY(%(document_ids)s::uuid[])
ORDER BY d.id
FOR UPDATE OF d FOR SHARE OF p;

-- name: complete
-- The documents are indexed; the project's lexical totals move by the change in their chunks,
-- and its count of chunks written since the last pack by the chunks written. Returns that
-- count (one row per document, all the same).
WITH stats AS (
    INSERT INTO lexical_stats (project_id, chunk_count, term_count, chunks_since_pack)
    VALUES (%(project_id)s, greatest(%(chunk_delta)s::bigint, 0),
            greatest(%(term_delta)s::bigint, 0), %(chunks_written)s::bigint)
    ON CONFLICT (project_id) DO UPDATE
    SET chunk_count = lexical_stats.chunk_count + %(chunk_delta)s::bigint,
        term_count = lexical_stats.term_count + %(term_delta)s::bigint,
        chunks_since_pack = lexical_stats.chunks_since_pack + %(chunks_written)s::bigint
    RETURNING chunks_since_pack
)
UPDATE documents d
SET status = 'complete', error = NULL, error_code = NULL, indexed_hash = d.content_hash,
    chunk_count = x.chunk_count, term_count = x.term_count, text_length = x.text_length,
    title = CASE WHEN d.title = '' THEN coalesce(x.title, '') ELSE d.title END,
    indexed_at = now(), updated_at = now()
FROM unnest(%(document_ids)s::uuid[], %(chunk_counts)s::int[], %(term_counts)s::bigint[],
            %(text_lengths)s::int[], %(titles)s::text[])
     AS x(id, chunk_count, term_count, text_length, title)
WHERE d.project_id = %(project_id)s AND d.id = x.id
RETURNING (SELECT s.chunks_since_pack FROM stats s) AS chunks_since_pack;

-- name: fail
-- Only the run that holds the document (status indexing) records its failure: a version
-- submitted meanwhile is pending and keeps its own state.
UPDATE documents
SET status = %(status)s, error = %(error)s, error_code = %(error_code)s, updated_at = now()
WHERE project_id = %(project_id)s AND id = %(document_id)s AND status = 'indexing';

-- name: reset_for_retry
UPDATE documents
SET status = 'pending', error = NULL, error_code = NULL, attempts = 0, updated_at = now()
WHERE project_id = %(project_id)s AND id = %(document_id)s AND status = 'failed'
RETURNING id;

-- name: delete
DELETE FROM documents WHERE project_id = %(project_id)s AND id = %(document_id)s
RETURNING content_hash;

-- name: hold_project
-- What a submission holds until it commits: the project's row, which then cannot be deleted
-- under it (no row if it already is), and the project's kept bytes, shared, so that no
-- forget deletes bytes between their put and the documents that use them. The second is a
-- transaction-level advisory lock in a key space of its own (two keys, the first 7001); one
-- per project, not one per content, so a batch of hundreds of documents takes one slot of
-- the lock table.
SELECT pg_advisory_xact_lock_shared(7001, hashtext(id::text))
FROM projects WHERE id = %(project_id)s FOR KEY SHARE;

-- name: lock_contents
-- A forget's exclusive hold, the other side of hold_project's: it waits for the project's
-- submissions in flight, and they for it.
SELECT pg_advisory_xact_lock(7001, hashtext(%(project_id)s::text));

-- name: contents_in_use
SELECT DISTINCT content_hash FROM documents
WHERE project_id = %(project_id)s AND content_hash = ANY(%(content_hashes)s::text[]);

-- name: orphaned
-- A maintenance sweep over all projects (the one query not scoped by project): pending or
-- indexing documents that no queued or running job will pick up (for example
-- when a process died between saving a document and queueing its job).
SELECT d.id, d.project_id FROM documents d
WHERE d.status IN ('pending', 'indexing')
  AND d.updated_at < now() - make_interval(secs => %(older_than_s)s)
  AND NOT EXISTS (
      SELECT 1 FROM procrastinate_jobs j
      WHERE j.status IN ('todo', 'doing')
        AND j.args ->> 'document_id' = d.id::text)
LIMIT 1000;

-- name: statuses
SELECT id, external_id, status, chunk_count, error_code, error
FROM documents WHERE project_id = %(project_id)s AND id = ANY(%(ids)s::uuid[]);

-- name: save_summary
-- Only for the version it was made from: a document re-indexed meanwhile keeps waiting for
-- the summary of its new text.
UPDATE documents SET summary = %(summary)s, summary_hash = %(indexed_hash)s
WHERE project_id = %(project_id)s AND id = %(document_id)s
  AND indexed_hash = %(indexed_hash)s;

-- name: summaries
-- Current summaries (of the indexed version) of some documents.
SELECT id, summary FROM documents
WHERE project_id = %(project_id)s AND id = ANY(%(document_ids)s)
  AND summary IS NOT NULL AND summary_hash = indexed_hash;
