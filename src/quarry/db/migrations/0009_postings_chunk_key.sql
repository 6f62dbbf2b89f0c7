-- Postings without a per-row check of their chunk.
--
-- A chunk has about 60 postings, and the foreign key from chunk_terms to chunks ran a lookup
-- of the chunk for every posting written. The check guards nothing: postings are written only
-- by the statement that writes or re-reads their chunk (chunks.insert_many,
-- chunks.reanalyse). What the key did that matters is cascade their deletion, and that stays:
-- a statement-level trigger on chunks removes the postings of every chunk a statement
-- deleted, by the index on chunk_terms (chunk_id), once per statement whichever way the
-- chunks went (a new version of their document, the document deleted, the project deleted).
-- The key to projects stays: every domain table is scoped by a project that exists.
ALTER TABLE chunk_terms DROP CONSTRAINT chunk_terms_chunk_id_fkey;

CREATE FUNCTION drop_postings_of_deleted_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunk_terms p USING deleted_chunks d WHERE p.chunk_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_drop_postings
    AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS deleted_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION drop_postings_of_deleted_chunks();
