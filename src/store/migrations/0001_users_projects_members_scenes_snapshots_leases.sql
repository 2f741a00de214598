-- users, projects, members, scenes, room snapshots, leases
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
