-- Model calls: one usage record per provider attempt (served, failed, cut short or answered
-- from the cache), and the exact-match response cache of temperature-0 calls.
-- project_id and user_id carry no foreign key on purpose: spend outlives deleted projects.
CREATE TABLE model_usage (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    request_id text NOT NULL,
    project_id uuid,
    user_id uuid,
    role text NOT NULL,
    operation text NOT NULL CHECK (operation IN ('generate', 'stream', 'json', 'embed')),
    provider text NOT NULL,
    model text NOT NULL,
    provider_model text NOT NULL,
    input_tokens integer NOT NULL CHECK (input_tokens >= 0),
    output_tokens integer NOT NULL CHECK (output_tokens >= 0),
    tokens_estimated boolean NOT NULL,
    cost numeric(18, 9),
    latency_ms real NOT NULL,
    ttft_ms real,
    outcome text NOT NULL CHECK (outcome IN ('ok', 'error', 'partial', 'cancelled', 'cached')),
    error text
);
-- Summaries by project, user or model over a range of days read one index range each.
CREATE INDEX model_usage_project_time ON model_usage (project_id, created_at);
CREATE INDEX model_usage_user_time ON model_usage (user_id, created_at);
CREATE INDEX model_usage_model_time ON model_usage (model, created_at);

CREATE TABLE model_cache (
    key bytea PRIMARY KEY,
    model text NOT NULL,
    response jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX model_cache_expires ON model_cache (expires_at);
