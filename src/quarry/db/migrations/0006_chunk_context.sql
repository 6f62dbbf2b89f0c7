-- A chunk's context: the title of its document when the chunk does not begin with it. The
-- model embeds, and BM25 analyses, the context and the text together (indexed_text), so the
-- later chunks of a document still match queries about its subject; the text and its offsets
-- stay the document's own. Chunks indexed before this have none.
ALTER TABLE chunks ADD COLUMN context text NOT NULL DEFAULT '';

-- The same join as quarry.ingest.split.indexed_text, for analysis inside Postgres.
CREATE FUNCTION indexed_text(context text, body text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN context = '' THEN body ELSE context || E'\n\n' || body END
$$;
