-- Packed postings: a large project's common terms as blocks of binary postings.
--
-- A row per posting (chunk_terms) is cheap to write and to delete, but a query term that
-- appears in tens of thousands of chunks costs Postgres an index tuple, a visibility check
-- and two aggregate steps per posting: at 100k chunks, most of a hybrid search's CPU. A
-- block holds up to a few thousand postings of one term as the two packed strings the search
-- reads anyway (the chunk ids, and each posting's chunk length << 32 | tf, big-endian int8s
-- end to end, in the same order), so reading it is a copy. bench/README.md has the figures.
--
-- Like the segments of a search engine's index, blocks are written in the background
-- (quarry.search.postings.pack, a job queued once enough new chunks have been written): it
-- moves the postings of a project's common terms out of chunk_terms into new blocks, in one
-- transaction, so each posting is in exactly one of the two places and a search reads both.
-- Blocks are never edited in place by the write path. A chunk deleted after its postings were
-- packed leaves a row in packed_deletions; searches drop its postings (and count df without
-- them), and the next pack removes them from the blocks.
CREATE TABLE term_blocks (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    term text NOT NULL,
    first_chunk bigint NOT NULL,   -- the lowest chunk id in the block
    last_chunk bigint NOT NULL,    -- the highest
    postings integer NOT NULL CHECK (postings > 0),
    chunk_ids bytea NOT NULL,      -- 8 bytes per posting
    shapes bytea NOT NULL,         -- 8 bytes per posting, in the order of chunk_ids
    PRIMARY KEY (project_id, term, first_chunk),
    CHECK (octet_length(chunk_ids) = 8 * postings AND octet_length(shapes) = 8 * postings)
);
-- Stored out of line and uncompressed: compressing int8 ids costs CPU at every read and
-- saves little.
ALTER TABLE term_blocks ALTER COLUMN chunk_ids SET STORAGE EXTERNAL,
                        ALTER COLUMN shapes SET STORAGE EXTERNAL;

CREATE TABLE packed_deletions (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    chunk_id bigint NOT NULL,
    PRIMARY KEY (project_id, chunk_id)
);

-- Chunks written since the project's last pack: the write path adds to it, a pack takes
-- away what it saw, and a pack is queued when it reaches QUARRY_BM25_PACK_CHUNKS.
ALTER TABLE lexical_stats ADD COLUMN chunks_since_pack bigint NOT NULL DEFAULT 0;

-- A deleted chunk's postings go: those still in chunk_terms by its index, as before; for
-- those a pack may have moved into blocks, a row in packed_deletions (only where the project
-- has blocks, and not when the project itself is being deleted). chunk_terms first: if a
-- pack is moving this chunk's postings right now, that delete waits for the pack to commit,
-- and the row below then marks the postings the pack moved.
CREATE OR REPLACE FUNCTION drop_postings_of_deleted_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunk_terms p USING deleted_chunks d WHERE p.chunk_id = d.id;
    INSERT INTO packed_deletions (project_id, chunk_id)
    SELECT d.project_id, d.id FROM deleted_chunks d
    WHERE EXISTS (SELECT 1 FROM term_blocks b WHERE b.project_id = d.project_id)
      AND EXISTS (SELECT 1 FROM projects p WHERE p.id = d.project_id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
