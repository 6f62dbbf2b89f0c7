-- name: create
INSERT INTO api_keys (user_id, name, prefix, secret_hash, expires_at)
VALUES (%(user_id)s, %(name)s, %(prefix)s, %(secret_hash)s, %(expires_at)s)
RETURNING id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at;

-- name: get_for_auth
SELECT k.id, k.user_id, k.secret_hash, k.expires_at, k.revoked_at, k.last_used_at,
       u.name AS user_name, u.is_admin
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.prefix = %(prefix)s;

-- name: touch
-- Recording every use would write on every request; once a minute is enough to be useful.
UPDATE api_keys SET last_used_at = now()
WHERE id = %(key_id)s
  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: list_for_user
SELECT id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at
FROM api_keys WHERE user_id = %(user_id)s ORDER BY created_at, prefix;

-- name: get
SELECT id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at
FROM api_keys WHERE id = %(key_id)s;

-- name: get_by_prefix
SELECT id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at
FROM api_keys WHERE prefix = %(prefix)s;

-- name: revoke
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = %(key_id)s
RETURNING id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at;
