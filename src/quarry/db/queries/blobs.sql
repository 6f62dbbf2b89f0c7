-- name: put
INSERT INTO blobs (project_id, content_hash, data)
VALUES (%(project_id)s, %(content_hash)s, %(data)s)
ON CONFLICT (project_id, content_hash) DO NOTHING;

-- name: get
SELECT data FROM blobs WHERE project_id = %(project_id)s AND content_hash = %(content_hash)s;

-- name: delete
DELETE FROM blobs
WHERE project_id = %(project_id)s AND content_hash = ANY(%(content_hashes)s::text[]);

-- name: scan
-- A page of a project's kept contents, in hash order after the last page's last.
SELECT content_hash FROM blobs
WHERE project_id = %(project_id)s AND content_hash > %(after)s
ORDER BY content_hash LIMIT %(limit)s;
