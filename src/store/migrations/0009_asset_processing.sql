-- what the asset pipeline made of each asset, per pipeline version (docs/assets.md)
CREATE TABLE asset_processing (
  asset_id      TEXT NOT NULL,
  pipeline      TEXT NOT NULL,
  project_id    TEXT NOT NULL,
  state         TEXT NOT NULL CHECK (state IN ('queued', 'processing', 'ready', 'failed', 'skipped')),
  stage         TEXT NOT NULL,
  percent       INTEGER NOT NULL,
  manifest_key  TEXT,
  levels        INTEGER NOT NULL,
  error_code    TEXT,
  error         TEXT,
  updated_at    BIGINT NOT NULL,
  PRIMARY KEY (asset_id, pipeline)
);
