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

-- name: invite
INSERT INTO invitations (project_id, user_id, role, invited_by)
VALUES (%(project_id)s, %(user_id)s, %(role)s::member_role, %(invited_by)s)
ON CONFLICT (project_id, user_id) DO UPDATE
SET role = excluded.role, invited_by = excluded.invited_by
RETURNING project_id, user_id, role::text AS role, created_at;

-- name: list_invited
SELECT i.project_id, i.user_id, u.name AS user_name, i.role::text AS role, i.created_at,
       true AS pending
FROM invitations i JOIN users u ON u.id = i.user_id
WHERE i.project_id = %(project_id)s
ORDER BY i.created_at, u.name;

-- name: uninvite
-- Withdrawn, declined or accepted: the role it offered, or no row if there was none.
DELETE FROM invitations WHERE project_id = %(project_id)s AND user_id = %(user_id)s
RETURNING role::text AS role;

-- name: invitations_for
SELECT i.project_id, p.name AS project_name, i.role::text AS role, u.name AS invited_by,
       i.created_at
FROM invitations i
JOIN projects p ON p.id = i.project_id
LEFT JOIN users u ON u.id = i.invited_by
WHERE i.user_id = %(user_id)s
ORDER BY i.created_at;
