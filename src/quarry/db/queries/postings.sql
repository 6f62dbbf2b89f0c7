-- Packing postings into blocks (quarry.search.postings; migration 0010 says why).

-- name: lock_project
-- One pack per project at a time; the lock goes with the transaction.
SELECT pg_advisory_xact_lock(hashtextextended('quarry:pack:' || %(project_id)s::text, 0));

-- name: chunks_since_pack
SELECT coalesce((SELECT s.chunks_since_pack FROM lexical_stats s
                 WHERE s.project_id = %(project_id)s), 0) AS chunks;

-- name: move
-- The postings in chunk_terms of the project's common terms (those with at least
-- min_postings there, and those that have blocks already) leave it for new blocks of at most
-- block_size postings each, ids ascending within a block. Postings a concurrent transaction
-- has not committed stay where they are, for the next pack. Returns what was moved.
WITH common AS (
    SELECT p.term FROM chunk_terms p
    WHERE p.project_id = %(project_id)s
    GROUP BY p.term HAVING count(*) >= %(min_postings)s
    UNION
    SELECT DISTINCT b.term FROM term_blocks b WHERE b.project_id = %(project_id)s
), moved AS (
    DELETE FROM chunk_terms p USING common c
    WHERE p.project_id = %(project_id)s AND p.term = c.term
    RETURNING p.term, p.chunk_id, p.tf, p.chunk_terms
), numbered AS (
    SELECT m.*, (row_number() OVER (PARTITION BY m.term ORDER BY m.chunk_id) - 1)
                / %(block_size)s AS block
    FROM moved m
), blocks AS (
    INSERT INTO term_blocks (project_id, term, first_chunk, last_chunk, postings, chunk_ids,
                             shapes)
    SELECT %(project_id)s, n.term, min(n.chunk_id), max(n.chunk_id), count(*),
           string_agg(int8send(n.chunk_id), ''::bytea ORDER BY n.chunk_id),
           string_agg(int8send((n.chunk_terms::int8 << 32) | n.tf), ''::bytea
                      ORDER BY n.chunk_id)
    FROM numbered n
    GROUP BY n.term, n.block
    RETURNING postings
)
SELECT count(*) AS blocks, coalesce(sum(postings), 0) AS postings FROM blocks;

-- name: merge
-- Each term's blocks smaller than block_size, when it has more than one, become one block
-- (their strings joined in order of first chunk; a block needs no order across its parts,
-- only each chunk once). A term then has at most one small block after every pack, and no
-- block holds more than twice block_size postings.
WITH small AS (
    DELETE FROM term_blocks b
    WHERE b.project_id = %(project_id)s AND b.postings < %(block_size)s
      AND b.term IN (SELECT s.term FROM term_blocks s
                     WHERE s.project_id = %(project_id)s AND s.postings < %(block_size)s
                     GROUP BY s.term HAVING count(*) > 1)
    RETURNING b.*
)
INSERT INTO term_blocks (project_id, term, first_chunk, last_chunk, postings, chunk_ids, shapes)
SELECT %(project_id)s, s.term, min(s.first_chunk), max(s.last_chunk), sum(s.postings),
       string_agg(s.chunk_ids, ''::bytea ORDER BY s.first_chunk),
       string_agg(s.shapes, ''::bytea ORDER BY s.first_chunk)
FROM small s
GROUP BY s.term;

-- name: take_deletions
-- The chunks deleted since their postings were packed, removed from the list: this pack
-- takes them out of the blocks.
DELETE FROM packed_deletions WHERE project_id = %(project_id)s RETURNING chunk_id;

-- name: blocks_spanning
-- The blocks whose range of chunk ids holds any of these (the blocks that may hold them).
SELECT b.term, b.first_chunk, b.chunk_ids, b.shapes
FROM term_blocks b
WHERE b.project_id = %(project_id)s
  AND EXISTS (SELECT 1 FROM unnest(%(chunk_ids)s::bigint[]) AS x(id)
              WHERE x.id BETWEEN b.first_chunk AND b.last_chunk);

-- name: drop_blocks
DELETE FROM term_blocks b
USING unnest(%(terms)s::text[], %(firsts)s::bigint[]) AS o(term, first_chunk)
WHERE b.project_id = %(project_id)s AND b.term = o.term AND b.first_chunk = o.first_chunk;

-- name: insert_blocks
INSERT INTO term_blocks (project_id, term, first_chunk, last_chunk, postings, chunk_ids, shapes)
SELECT %(project_id)s, n.term, n.first_chunk, n.last_chunk, n.postings, n.chunk_ids, n.shapes
FROM unnest(%(terms)s::text[], %(firsts)s::bigint[], %(lasts)s::bigint[],
            %(counts)s::int[], %(chunk_ids)s::bytea[], %(shapes)s::bytea[])
     AS n(term, first_chunk, last_chunk, postings, chunk_ids, shapes);

-- name: packed
-- The project's chunks since the last pack go down by what this pack saw (writes committed
-- meanwhile keep counting towards the next).
UPDATE lexical_stats SET chunks_since_pack = greatest(chunks_since_pack - %(seen)s::bigint, 0)
WHERE project_id = %(project_id)s;

-- name: unpack
-- Everything packed goes (the project's postings are about to be written anew, all into
-- chunk_terms: every chunk counts towards the next pack).
WITH blocks AS (
    DELETE FROM term_blocks WHERE project_id = %(project_id)s
), deletions AS (
    DELETE FROM packed_deletions WHERE project_id = %(project_id)s
)
UPDATE lexical_stats SET chunks_since_pack = chunk_count WHERE project_id = %(project_id)s;
