-- The exact-match response cache of temperature-0 model calls (quarry.gateway.cache).

-- name: get
SELECT key, model, response FROM model_cache
WHERE key = ANY(%(keys)s) AND expires_at > now()

-- name: put
INSERT INTO model_cache (key, model, response, expires_at)
VALUES (%(key)s, %(model)s, %(response)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (key) DO UPDATE
SET response = EXCLUDED.response, created_at = now(), expires_at = EXCLUDED.expires_at

-- name: purge
DELETE FROM model_cache WHERE expires_at <= now()
