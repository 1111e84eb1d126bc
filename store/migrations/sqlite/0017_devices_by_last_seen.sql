-- Issue 25: the console lists devices most recently seen first, a walk of this index from the
-- page's position (keyset-paged by last_seen_at and seq); the devices never seen (NULL) come
-- after those seen, in the same index. MarkSeen moves last_seen_at in bulk and so writes this
-- index too (see BenchmarkMarkSeen).
CREATE INDEX devices_seen ON devices (account_id, last_seen_at, seq);
