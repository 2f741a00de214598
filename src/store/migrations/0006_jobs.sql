-- jobs and their attempts
-- The job queue (issue #17): every job's state and history, authoritative whichever
-- transport (the database, RabbitMQ) tells workers of work. Times are ms since the Unix
-- epoch, by the database's clock.
CREATE TABLE jobs (
  id               TEXT PRIMARY KEY,
  type             TEXT NOT NULL,
  payload          TEXT NOT NULL,
  idempotency_key  TEXT,
  priority         INTEGER NOT NULL DEFAULT 0,
  state            TEXT NOT NULL
                   CHECK (state IN ('queued', 'leased', 'succeeded', 'dead', 'cancelled')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  not_before       BIGINT NOT NULL,
  worker           TEXT NOT NULL DEFAULT '',
  lease_expires_at BIGINT NOT NULL DEFAULT 0,
  progress         INTEGER NOT NULL DEFAULT 0,
  status           TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  result           TEXT,
  last_error       TEXT NOT NULL DEFAULT '',
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  finished_at      BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (type, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_ready ON jobs (state, type, priority, not_before);
CREATE INDEX jobs_by_lease ON jobs (state, lease_expires_at);
CREATE TABLE job_attempts (
  job_id     TEXT NOT NULL REFERENCES jobs (id),
  attempt    INTEGER NOT NULL,
  worker     TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  ended_at   BIGINT NOT NULL DEFAULT 0,
  outcome    TEXT NOT NULL DEFAULT '',
  error      TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (job_id, attempt)
);
