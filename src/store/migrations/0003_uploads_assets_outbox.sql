-- uploads and assets as the upload API keeps them; the event outbox
-- Nothing wrote assets or uploads before 3: they are recreated in their final shape.
DROP TABLE uploads;
DROP TABLE assets;
CREATE TABLE assets (
  id           TEXT PRIMARY KEY,
  project_id   TEXT NOT NULL REFERENCES projects (id),
  name         TEXT NOT NULL,
  sha256       TEXT,
  size         BIGINT NOT NULL,
  content_type TEXT NOT NULL,
  object_key   TEXT NOT NULL,
  upload_id    TEXT NOT NULL,
  created_by   TEXT NOT NULL,
  created_at   BIGINT NOT NULL,
  deleted_at   BIGINT
);
CREATE UNIQUE INDEX assets_by_sha256 ON assets (project_id, sha256) WHERE deleted_at IS NULL;
CREATE INDEX assets_by_project ON assets (project_id, id);
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
  asset_id     TEXT,
  error        TEXT,
  created_at   BIGINT NOT NULL,
  updated_at   BIGINT NOT NULL
);
CREATE INDEX uploads_by_state ON uploads (state, updated_at);
CREATE INDEX uploads_by_project ON uploads (project_id, state);
CREATE TABLE events (
  id           TEXT PRIMARY KEY,
  kind         TEXT NOT NULL,
  project_id   TEXT NOT NULL,
  body         TEXT NOT NULL,
  created_at   BIGINT NOT NULL,
  consumed_at  BIGINT
);
CREATE INDEX events_pending ON events (consumed_at, created_at);
