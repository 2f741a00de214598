-- finished jobs by state and age, for the retention purge
-- The purge reads succeeded, cancelled and dead jobs oldest first once a minute; without an
-- index it would read every job the table keeps.
CREATE INDEX jobs_finished ON jobs (state, finished_at);
