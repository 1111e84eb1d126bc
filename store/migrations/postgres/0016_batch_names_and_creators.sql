-- Issue 25: a batch may be named (?batch_name= on registration), and records who created it, as
-- the audit log names actors (creator_type 'api_key' or 'user', creator_id the key's or the
-- user's ID), so that a console user with the operations role may disable or delete the lots it
-- registered itself. Batches made before have no creator (''): only an administrator may delete
-- them. created_by stays the name shown (a key may be renamed, an ID may not).
ALTER TABLE batches ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN creator_type TEXT NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN creator_id TEXT NOT NULL DEFAULT '';
