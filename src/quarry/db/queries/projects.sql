-- name: create
INSERT INTO projects (name, description, created_by, analyzer)
VALUES (%(name)s, %(description)s, %(created_by)s, %(analyzer)s::regconfig)
RETURNING id, name, description, analyzer::text AS analyzer, created_by, created_at, updated_at;

-- name: get_by_id
SELECT id, name, description, analyzer::text AS analyzer, created_by, created_at, updated_at
FROM projects WHERE id = %(project_id)s;

-- name: get_by_name
SELECT id, name, description, analyzer::text AS analyzer, created_by, created_at, updated_at
FROM projects WHERE name = %(name)s;

-- name: role_of
SELECT role::text AS role FROM memberships
WHERE project_id = %(project_id)s AND user_id = %(user_id)s;

-- name: list_for_user
SELECT p.id, p.name, p.description, p.analyzer::text AS analyzer, p.created_by, p.created_at,
       p.updated_at, m.role::text AS role
FROM projects p JOIN memberships m ON m.project_id = p.id
WHERE m.user_id = %(user_id)s
ORDER BY p.name;

-- name: list_all
SELECT p.id, p.name, p.description, p.analyzer::text AS analyzer, p.created_by, p.created_at,
       p.updated_at, m.role::text AS role
FROM projects p
LEFT JOIN memberships m ON m.project_id = p.id AND m.user_id = %(user_id)s
ORDER BY p.name;

-- name: ids
-- Every project, for a maintenance sweep (Documents.sweep_all_blobs); not scoped by design.
SELECT id FROM projects ORDER BY id;

-- name: lock_for_update
-- The project's row as an update will change it, held until the transaction ends (the lock
-- an UPDATE of its non-key columns takes, so writers of its documents are not kept waiting).
SELECT analyzer::text AS analyzer FROM projects WHERE id = %(project_id)s FOR NO KEY UPDATE;

-- name: lock_documents
SELECT id FROM documents WHERE project_id = %(project_id)s ORDER BY id FOR NO KEY UPDATE;

-- name: update
UPDATE projects
SET name = coalesce(%(name)s, name),
    description = coalesce(%(description)s, description),
    analyzer = coalesce(%(analyzer)s::regconfig, analyzer),
    updated_at = now()
WHERE id = %(project_id)s
RETURNING id, name, description, analyzer::text AS analyzer, created_by, created_at, updated_at;

-- name: analyzer_exists
SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = %(analyzer)s) AS found;

-- name: delete
-- The project goes, and is recorded until its kept bytes outside the database go too.
WITH gone AS (DELETE FROM projects WHERE id = %(project_id)s RETURNING id)
INSERT INTO deleted_projects (id) SELECT id FROM gone ON CONFLICT DO NOTHING;

-- name: deleted
SELECT id FROM deleted_projects ORDER BY deleted_at;

-- name: forget_deleted
DELETE FROM deleted_projects WHERE id = %(project_id)s;
