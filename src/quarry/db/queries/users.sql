-- name: create
INSERT INTO users (name, email, is_admin)
VALUES (%(name)s, %(email)s, %(is_admin)s)
RETURNING id, name, email, is_admin, created_at;

-- name: get
SELECT id, name, email, is_admin, created_at FROM users WHERE id = %(user_id)s;

-- name: get_by_name
SELECT id, name, email, is_admin, created_at FROM users WHERE name = %(name)s;

-- name: list
SELECT id, name, email, is_admin, created_at FROM users ORDER BY created_at, name;

-- name: count
SELECT count(*) AS n FROM users;

-- name: delete
DELETE FROM users WHERE id = %(user_id)s;

-- name: lock_bootstrap
-- Serialises first-start bootstrap across processes for the rest of the transaction.
SELECT pg_advisory_xact_lock(hashtext('quarry.bootstrap'));
