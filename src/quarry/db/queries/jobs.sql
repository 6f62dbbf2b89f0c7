-- name: get
-- Procrastinate's job, scoped to the project through its arguments, with quarry's result.
SELECT j.id, j.task_name, j.status::text AS status, j.attempts, j.queue_name,
       j.scheduled_at, r.result, r.finished_at
FROM procrastinate_jobs j
LEFT JOIN job_results r ON r.job_id = j.id AND r.project_id = %(project_id)s
WHERE j.id = %(job_id)s AND j.args ->> 'project_id' = %(project_id)s::text;

-- name: save_result
-- Nothing when the project has been deleted since the job was queued: no one can ask.
INSERT INTO job_results (job_id, project_id, result)
SELECT %(job_id)s, id, %(result)s FROM projects WHERE id = %(project_id)s
ON CONFLICT (job_id) DO UPDATE SET result = excluded.result, finished_at = now();

-- name: last_heartbeat
SELECT extract(epoch FROM now() - max(last_heartbeat))::float8 AS age_s,
       count(*) AS workers
FROM procrastinate_workers;

-- name: last_id
-- The newest job's id: what a command queues after it has a greater one.
SELECT coalesce(max(id), 0) AS id FROM procrastinate_jobs;

-- name: failed_since
-- A project's jobs of one task, queued after job ``after``, that failed for good.
SELECT count(*) AS n FROM procrastinate_jobs
WHERE task_name = %(task)s AND id > %(after)s AND status = 'failed'
  AND args ->> 'project_id' = %(project_id)s::text;

-- name: unfinished_for_project
SELECT count(*) AS n FROM procrastinate_jobs
WHERE status IN ('todo', 'doing') AND args ->> 'project_id' = %(project_id)s::text;

-- name: analyze_queue
-- Fresh planner statistics for the job table (see Jobs.enqueued), and how many jobs wait.
ANALYZE procrastinate_jobs;

-- name: queued
SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo';

-- name: try_recovery_lock
-- One process at a time takes over stalled jobs (quarry.jobs.queue.Jobs.recover); held
-- until the transaction ends.
SELECT pg_try_advisory_xact_lock(hashtextextended('quarry:recover', 0)) AS locked;

-- name: queued_with_lock
-- Whether a job with this queueing lock is queued (Procrastinate allows one at a time).
SELECT EXISTS (
    SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = %(lock)s AND status = 'todo'
) AS queued;

-- name: packs_due
-- Projects with at least pack_after chunks written since their postings were last packed,
-- and whether a pack of theirs is queued or running. Writes queue a pack as they pass the
-- mark; a re-analysis (an analyzer change, migration 0016) unpacks a whole project at once,
-- and no write need follow.
SELECT s.project_id,
       EXISTS (SELECT 1 FROM procrastinate_jobs j
               WHERE j.queueing_lock = %(lock_prefix)s || s.project_id::text
                 AND j.status IN ('todo', 'doing')) AS pending
FROM lexical_stats s
WHERE s.chunks_since_pack >= %(pack_after)s;
