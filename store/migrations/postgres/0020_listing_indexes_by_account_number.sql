-- Issue 27: the listing indexes are keyed by the account's number rather than its 20-character
-- ID, and the index of last sightings holds only the devices seen: a registration writes three
-- smaller entries to them rather than four bigger ones, about 15% of the instructions it spends
-- on a row in SQLite (callgrind, 51,200 rows). The devices never seen are listed from the
-- account's index (newest first, their last_seen_at checked on each row).
DROP INDEX devices_account;
CREATE INDEX devices_account ON devices (account_num, seq);
DROP INDEX devices_type;
CREATE INDEX devices_type ON devices (account_num, device_type_id, seq);
DROP INDEX devices_batch;
CREATE INDEX devices_batch ON devices (account_num, batch_id, seq);
DROP INDEX devices_seen;
CREATE INDEX devices_seen ON devices (account_num, last_seen_at, seq) WHERE last_seen_at IS NOT NULL;
