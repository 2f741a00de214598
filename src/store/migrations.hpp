// The schema, as an append-only list of migrations. Never edit one that has shipped: add
// the next. SQL here is the subset SQLite and PostgreSQL share (TEXT, BIGINT, ms-since-epoch
// timestamps as BIGINT set by Kiln, ids made by Kiln).
#pragma once

namespace kiln::store {

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

inline constexpr Migration kMigrations[] = {
    {1, "users, projects, members, scenes, room snapshots, leases",
     R"sql(
CREATE TABLE users (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  token_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE projects (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  deleted_at BIGINT
);
CREATE TABLE members (
  project_id TEXT NOT NULL REFERENCES projects (id),
  user_id    TEXT NOT NULL,
  role       TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
  added_at   BIGINT NOT NULL,
  PRIMARY KEY (project_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, project_id);
CREATE TABLE scenes (
  project_id TEXT NOT NULL REFERENCES projects (id),
  id         TEXT NOT NULL,
  name       TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  deleted_at BIGINT,
  PRIMARY KEY (project_id, id)
);
CREATE TABLE room_snapshots (
  room      TEXT NOT NULL,
  seq       BIGINT NOT NULL,
  epoch     TEXT NOT NULL,
  body      TEXT NOT NULL,
  bytes     BIGINT NOT NULL,
  stored_at BIGINT NOT NULL,
  writer    TEXT NOT NULL,
  PRIMARY KEY (room, seq)
);
CREATE TABLE room_leases (
  room       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at BIGINT NOT NULL
);
)sql"},
    {2, "assets, uploads, builds",
     R"sql(
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
)sql"},
    // Nothing wrote assets or uploads before 3: they are recreated in their final shape.
    {3, "uploads and assets as the upload API keeps them; the event outbox",
     R"sql(
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
)sql"},
    {4, "assets: the media type their first bytes say",
     R"sql(
ALTER TABLE assets ADD COLUMN detected_type TEXT;
)sql"},
    // Migration 2 made a builds table ahead of any code; it returns with the build farm,
    // shaped by what that code needs (issue #16).
    {5, "drop the unused builds table",
     R"sql(
DROP INDEX builds_by_project;
DROP TABLE builds;
)sql"},
};

}  // namespace kiln::store
