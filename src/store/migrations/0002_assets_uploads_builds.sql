-- assets, uploads, builds
CREATE TABLE assets (
  id           TEXT PRIMARY KEY,
  project_id   TEXT NOT NULL REFERENCES projects (id),
  name         TEXT NOT NULL,
  sha256       TEXT NOT NULL,
  size         BIGINT NOT NULL,
  content_type TEXT NOT NULL,
  object_key   TEXT NOT NULL,
  created_by   TEXT NOT NULL,
  created_at   BIGINT NOT NULL,
  deleted_at   BIGINT,
  UNIQUE (project_id, sha256)
);
CREATE TABLE uploads (
  id           TEXT PRIMARY KEY,
  project_id   TEXT NOT NULL REFERENCES projects (id),
  user_id      TEXT NOT NULL,
  filename     TEXT NOT NULL,
  size         BIGINT NOT NULL,
  content_type TEXT NOT NULL,
  sha256       TEXT,
  object_key   TEXT NOT NULL,
  multipart_id TEXT,
  part_size    BIGINT,
  state        TEXT NOT NULL CHECK (state IN ('open', 'completed', 'aborted')),
  created_at   BIGINT NOT NULL,
  updated_at   BIGINT NOT NULL
);
CREATE INDEX uploads_by_state ON uploads (state, updated_at);
CREATE TABLE builds (
  id           TEXT PRIMARY KEY,
  project_id   TEXT NOT NULL REFERENCES projects (id),
  requested_by TEXT NOT NULL,
  target       TEXT NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  artifact_key TEXT,
  error        TEXT,
  created_at   BIGINT NOT NULL,
  updated_at   BIGINT NOT NULL
);
CREATE INDEX builds_by_project ON builds (project_id, created_at);
