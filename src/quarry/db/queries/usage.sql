-- Model usage records (quarry.gateway.accounting).

-- name: insert
INSERT INTO model_usage (
    request_id, project_id, user_id, role, operation, provider, model, provider_model,
    input_tokens, output_tokens, tokens_estimated, cost, latency_ms, ttft_ms, outcome, error
) VALUES (
    %(request_id)s, %(project_id)s, %(user_id)s, %(role)s, %(operation)s, %(provider)s,
    %(model)s, %(provider_model)s, %(input_tokens)s, %(output_tokens)s, %(tokens_estimated)s,
    %(cost)s, %(latency_ms)s, %(ttft_ms)s, %(outcome)s, %(error)s
)

-- name: by_model_day
-- One row per model and UTC day since a time, for one project (or every project when null).
SELECT
    (created_at AT TIME ZONE 'UTC')::date AS day,
    model,
    count(*) AS calls,
    count(*) FILTER (WHERE outcome = 'error') AS errors,
    count(*) FILTER (WHERE outcome = 'cached') AS cached,
    sum(input_tokens)::bigint AS input_tokens,
    sum(output_tokens)::bigint AS output_tokens,
    sum(cost) AS cost,
    count(*) FILTER (WHERE cost IS NULL) AS unpriced
FROM model_usage
WHERE (%(project_id)s::uuid IS NULL OR project_id = %(project_id)s::uuid)
  AND created_at >= %(since)s
GROUP BY 1, 2
ORDER BY 1, 2

-- name: for_request
SELECT * FROM model_usage WHERE request_id = %(request_id)s ORDER BY id
