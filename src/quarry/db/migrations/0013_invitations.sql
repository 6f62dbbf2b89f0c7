-- A user added to a project by someone else is invited, and becomes a member only by
-- accepting: otherwise anyone could add a user to a project named as one of theirs was (a
-- name freed by a rename or a delete), and that user's requests by name would land in it.
CREATE TABLE invitations (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role member_role NOT NULL,
    invited_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);

CREATE INDEX invitations_user_id_idx ON invitations (user_id);
