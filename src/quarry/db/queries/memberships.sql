-- name: upsert
INSERT INTO memberships (project_id, user_id, role)
VALUES (%(project_id)s, %(user_id)s, %(role)s::member_role)
ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role
RETURNING project_id, user_id, role::text AS role, created_at;

-- name: list
SELECT m.project_id, m.user_id, u.name AS user_name, m.role::text AS role, m.created_at
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.project_id = %(project_id)s
ORDER BY m.created_at, u.name;

-- name: delete
DELETE FROM memberships WHERE project_id = %(project_id)s AND user_id = %(user_id)s;

-- name: lock_project_members
-- Taken before changing owners so two requests cannot remove the last two owners at once.
SELECT id FROM projects WHERE id = %(project_id)s FOR UPDATE;

-- name: count_owners
SELECT count(*) AS n FROM memberships
WHERE project_id = %(project_id)s AND role = 'owner';
