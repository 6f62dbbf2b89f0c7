-- Search: an inverted index for BM25, and indexes for filters.

-- BM25 needs, for each query term, the chunks that contain it with the term's frequency in
-- each and each chunk's length. A tsvector per chunk holds the frequencies, but reading them
-- means unpacking every candidate's whole vector; a postings table answers a query term with
-- one index range scan that carries everything the score needs (index-only when the
-- visibility map allows). Document frequency is the length of a term's posting list, counted
-- in the same scan, so it can never drift from the postings.
CREATE TABLE chunk_terms (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    term text NOT NULL,
    chunk_id bigint NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    tf integer NOT NULL CHECK (tf > 0),          -- occurrences of the term in the chunk
    chunk_terms integer NOT NULL CHECK (chunk_terms > 0),  -- the chunk's length in terms
    PRIMARY KEY (project_id, term, chunk_id) INCLUDE (tf, chunk_terms)
);

-- Deleting a chunk (a new version, a deleted document) removes its postings by this index.
CREATE INDEX chunk_terms_chunk_idx ON chunk_terms (chunk_id);

-- What BM25 reads of analysed text, in one place for every writer: each term with its
-- frequency (the number of positions; a term whose positions were stripped counts once), and
-- the text's length in terms.
CREATE FUNCTION postings(terms tsvector) RETURNS TABLE (term text, tf integer)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT t.lexeme, coalesce(array_length(t.positions, 1), 1)::integer FROM unnest(terms) AS t
$$;

CREATE FUNCTION term_count(terms tsvector) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(sum(p.tf), 0)::integer FROM postings(terms) AS p
$$;

INSERT INTO chunk_terms (project_id, term, chunk_id, tf, chunk_terms)
SELECT c.project_id, t.term, c.id, t.tf, c.term_count
FROM chunks c CROSS JOIN LATERAL postings(c.terms) AS t
WHERE c.term_count > 0;


DROP INDEX chunks_terms_idx;
ALTER TABLE chunks DROP COLUMN terms;

-- Filters: tags (any of) and metadata containment.
CREATE INDEX documents_tags_idx ON documents USING gin (tags);
CREATE INDEX documents_metadata_idx ON documents USING gin (metadata jsonb_path_ops);
