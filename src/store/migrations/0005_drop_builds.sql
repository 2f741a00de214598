-- drop the unused builds table
-- Migration 2 made a builds table ahead of any code; it returns with the build farm,
-- shaped by what that code needs (issue #16).
DROP INDEX builds_by_project;
DROP TABLE builds;
