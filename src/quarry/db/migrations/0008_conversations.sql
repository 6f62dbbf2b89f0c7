-- Conversations and their messages, and document summaries.

CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    title text NOT NULL DEFAULT '',
    -- The rolling summary of the turns that no longer fit the history budget: every message
    -- with seq <= summarized_through is in it (written by the summarise_conversation job).
    summary text NOT NULL DEFAULT '',
    summarized_through integer NOT NULL DEFAULT 0,
    message_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_project_updated_idx ON conversations (project_id, updated_at DESC);

CREATE TABLE messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq integer NOT NULL CHECK (seq >= 1),
    role text NOT NULL CHECK (role IN ('user', 'assistant')),
    content text NOT NULL,
    -- complete; partial: the client left or the model broke off after sending text (the text
    -- is what was sent); failed: no answer at all (error says why).
    status text NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'partial', 'failed')),
    citations jsonb NOT NULL DEFAULT '[]',
    model text,
    input_tokens integer CHECK (input_tokens >= 0),
    output_tokens integer CHECK (output_tokens >= 0),
    tokens integer NOT NULL CHECK (tokens >= 0),  -- the content's own tokens, for history
    latency_ms real,
    ttft_ms real,
    error jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, seq)
);

-- A document's rolling summary (role maintenance), written after indexing when enabled;
-- summary_hash is the indexed_hash it was made from, so a new version is summarised again.
ALTER TABLE documents ADD COLUMN summary text;
ALTER TABLE documents ADD COLUMN summary_hash text;
