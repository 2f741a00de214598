-- assets: the media type their first bytes say
ALTER TABLE assets ADD COLUMN detected_type TEXT;
