-- Token vectors for late interaction, stored with the chunk's vector of the same model.
--
-- Where late interaction is on (QUARRY_RERANKER=late_interaction with the local model), each
-- chunk's token vectors are kept in a compact form (quarry.ingest.token_vectors: a format
-- byte, then 64 signed bytes per token, about 13 KB for a chunk of 200 tokens), so a search
-- compares the query's tokens with its candidates' by reading 20 rows instead of running the
-- model over 20 passages. NULL where they are not kept (another embedder, or late interaction
-- off); a search encodes such a chunk again, and `quarry reindex` fills them in.
--
-- Beside the vector, so they share its model, its reuse by content hash, its replacement by
-- `quarry reindex` and its deletion. Values this size live out of line (TOAST), so the heap
-- rows the HNSW index and the kNN read stay as narrow as before. STORAGE EXTERNAL: rounded
-- projections do not compress, and trying costs every write.
ALTER TABLE chunk_embeddings ADD COLUMN token_vectors bytea;
ALTER TABLE chunk_embeddings ALTER COLUMN token_vectors SET STORAGE EXTERNAL;
