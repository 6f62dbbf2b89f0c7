-- Documents, their chunks, vectors and lexical statistics.

-- The text search configuration that analyses a project's text for BM25 (lower-casing,
-- stemming, stop words). Changing it means re-analysing the project's chunks.
ALTER TABLE projects ADD COLUMN analyzer regconfig NOT NULL DEFAULT 'english';

CREATE TABLE documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- What makes two submissions the same document: a path, a file name, a URL or the
    -- caller's own id. A new submission with the same key and other content is a new version.
    external_id text NOT NULL,
    source_kind text NOT NULL CHECK (source_kind IN ('upload', 'path', 'text', 'url')),
    source text NOT NULL,
    title text NOT NULL DEFAULT '',
    format text NOT NULL,
    content_hash text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    version integer NOT NULL DEFAULT 1,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'indexing', 'complete', 'failed')),
    error text,
    error_code text,
    attempts integer NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    -- What the chunks currently stored were made from (null until first indexed).
    indexed_hash text,
    text_length integer,
    chunk_count integer NOT NULL DEFAULT 0,
    term_count bigint NOT NULL DEFAULT 0,  -- the sum over its chunks, for lexical_stats
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    indexed_at timestamptz,
    UNIQUE (project_id, external_id)
);

CREATE INDEX documents_project_status_idx ON documents (project_id, status);
CREATE INDEX documents_project_hash_idx ON documents (project_id, content_hash);
-- The workers' sweep for documents left without a job looks only at unfinished ones.
CREATE INDEX documents_unfinished_idx ON documents (updated_at)
    WHERE status IN ('pending', 'indexing');

CREATE TABLE chunks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    text text NOT NULL,
    char_start integer NOT NULL,
    char_end integer NOT NULL,
    page integer,
    token_count integer NOT NULL,
    content_hash bytea NOT NULL,
    -- Lexical statistics for BM25: the analysed terms with their positions (so their
    -- frequencies) and the number of terms.
    terms tsvector NOT NULL,
    term_count integer NOT NULL,
    UNIQUE (document_id, chunk_index),
    CHECK (char_start >= 0 AND char_end >= char_start)
);

CREATE INDEX chunks_project_hash_idx ON chunks (project_id, content_hash);
CREATE INDEX chunks_terms_idx ON chunks USING gin (terms);

-- One row per chunk and embedding model, so a re-index to another model never mixes the two.
CREATE TABLE chunk_embeddings (
    chunk_id bigint NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    model text NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (chunk_id, model)
);

CREATE INDEX chunk_embeddings_project_model_idx ON chunk_embeddings (project_id, model);

-- Totals for BM25's N and average length, kept with the chunks in the same transactions.
CREATE TABLE lexical_stats (
    project_id uuid PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    chunk_count bigint NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    term_count bigint NOT NULL DEFAULT 0 CHECK (term_count >= 0)
);

-- Raw bytes when the blob store is Postgres (the default with an external database, so
-- workers on other machines can read what an API replica received).
CREATE TABLE blobs (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    content_hash text NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (project_id, content_hash)
);

-- Procrastinate's fetch query checks, for each candidate job, that no other queued or running
-- job holds the same lock; its own index covers only running jobs, so with thousands of
-- documents queued (one job and one lock each) every fetch scanned the queue. This makes the
-- check an index lookup (measured: Postgres CPU per document stopped growing with the queue).
CREATE INDEX procrastinate_jobs_lock_idx ON procrastinate_jobs (lock) WHERE lock IS NOT NULL;

-- Finding the live job of a document (the orphan sweep) without scanning every job.
CREATE INDEX procrastinate_jobs_document_id_idx
    ON procrastinate_jobs ((args ->> 'document_id'))
    WHERE status IN ('todo', 'doing');
