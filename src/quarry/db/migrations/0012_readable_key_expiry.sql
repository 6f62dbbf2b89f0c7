-- API keys whose expiry Python cannot read back.
--
-- Before the API took client timestamps into UTC (quarry.validation.utc), a key could be made
-- to expire at, say, 9999-12-31T23:59:59-01:00: Postgres stored 10000-01-01 00:59:59 UTC, and
-- every later read of the row failed (the user's key list answered 500 from then on). Such an
-- expiry is "never" in all but name; it becomes the last moment Python can read.
UPDATE api_keys
SET expires_at = '9999-12-31 23:59:59.999999+00'
WHERE expires_at > '9999-12-31 23:59:59.999999+00';
