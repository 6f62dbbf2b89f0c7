-- Conversations and messages (quarry.answers.chat).

-- name: create
INSERT INTO conversations (project_id, created_by, title)
VALUES (%(project_id)s, %(created_by)s, %(title)s)
RETURNING *;

-- name: get
SELECT * FROM conversations WHERE id = %(conversation_id)s AND project_id = %(project_id)s;

-- name: list
-- Newest first; a page goes on after the previous page's last row (before, before_id):
-- older, or as old with a greater id. Without before_id, only older.
SELECT * FROM conversations
WHERE project_id = %(project_id)s
  AND (%(before)s::timestamptz IS NULL
       OR updated_at < %(before)s::timestamptz
       OR (updated_at = %(before)s::timestamptz AND id > %(before_id)s::uuid))
ORDER BY updated_at DESC, id
LIMIT %(limit)s;

-- name: delete
DELETE FROM conversations WHERE id = %(conversation_id)s AND project_id = %(project_id)s;

-- name: add_message
-- The next seq of the conversation: the UPDATE's row lock makes concurrent messages take turns.
-- A question is stored only while no other awaits its answer (awaiting_since, migration
-- 0015; one older than busy_s seconds no longer counts), and an answer ends the wait; the
-- lock re-reads the row, so of two questions at once the second sees the first's wait.
-- No row when the conversation is gone (deleted meanwhile) or, for a question, busy.
WITH next AS (
    UPDATE conversations
    SET message_count = message_count + 1, updated_at = now(),
        title = CASE WHEN title = '' AND %(role)s = 'user' THEN left(%(content)s, 80)
                     ELSE title END,
        awaiting_since = CASE WHEN %(role)s = 'user' THEN now() END
    WHERE id = %(conversation_id)s AND project_id = %(project_id)s
      AND (%(role)s <> 'user' OR awaiting_since IS NULL
           OR awaiting_since < now() - make_interval(secs => %(busy_s)s))
    RETURNING message_count AS seq
)
INSERT INTO messages (
    project_id, conversation_id, seq, role, content, status, citations, model, input_tokens,
    output_tokens, tokens, latency_ms, ttft_ms, error
)
SELECT %(project_id)s, %(conversation_id)s, next.seq, %(role)s, %(content)s, %(status)s, %(citations)s,
       %(model)s, %(input_tokens)s, %(output_tokens)s, %(tokens)s, %(latency_ms)s,
       %(ttft_ms)s, %(error)s
FROM next
RETURNING *;

-- name: messages
SELECT * FROM messages
WHERE project_id = %(project_id)s AND conversation_id = %(conversation_id)s
ORDER BY seq;

-- name: messages_after
-- The turns the rolling summary does not hold yet, newest first.
SELECT * FROM messages
WHERE project_id = %(project_id)s AND conversation_id = %(conversation_id)s
  AND seq > %(after)s
ORDER BY seq DESC;

-- name: messages_between
SELECT * FROM messages
WHERE project_id = %(project_id)s AND conversation_id = %(conversation_id)s
  AND seq > %(after)s AND seq <= %(through)s
ORDER BY seq;

-- name: save_summary
-- Only forward: a slower job that summarised less never overwrites a newer summary.
UPDATE conversations
SET summary = %(summary)s, summarized_through = %(through)s
WHERE id = %(conversation_id)s AND project_id = %(project_id)s
  AND summarized_through < %(through)s;
