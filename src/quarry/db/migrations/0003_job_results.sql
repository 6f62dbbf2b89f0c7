-- What a finished job produced, scoped by project. Procrastinate keeps the job itself.
CREATE TABLE job_results (
    job_id bigint PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    result jsonb NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_results_project_id_idx ON job_results (project_id);
