-- Projects deleted in this database whose raw bytes kept outside it (the file blob store) may
-- not be deleted yet: a crash between a project's delete and its files' leaves them, and the
-- sweep of kept bytes takes them (Documents.sweep_all_blobs). Only projects recorded here are
-- taken: a folder the database does not know could be another deployment's sharing the disk.
CREATE TABLE deleted_projects (
    id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
