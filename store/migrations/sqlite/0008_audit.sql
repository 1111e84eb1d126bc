-- The audit log: one entry per change, per account a hash chain (seq from 1 without gaps). entry
-- is the entry without its hash in RFC 8785 canonical JSON, exactly what hash covers; the other
-- columns repeat parts of it for the listing's filters. Times never go back within an account, so
-- a time range is a range of seq.
CREATE TABLE audit_log (
	account_id TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	time       INTEGER NOT NULL,
	action      TEXT NOT NULL,
	actor_type  TEXT NOT NULL,
	actor_id    TEXT NOT NULL,
	object_type TEXT NOT NULL,
	object_id   TEXT NOT NULL,
	entry      TEXT NOT NULL,
	hash       TEXT NOT NULL,
	PRIMARY KEY (account_id, seq)
) WITHOUT ROWID;
CREATE INDEX audit_action ON audit_log (account_id, action, seq);
CREATE INDEX audit_actor ON audit_log (account_id, actor_type, actor_id, seq);
CREATE INDEX audit_object ON audit_log (account_id, object_type, object_id, seq);
CREATE INDEX audit_time ON audit_log (account_id, time, seq);

-- Each account's newest entry; appends lock its row, so the chain has no forks.
CREATE TABLE audit_heads (
	account_id TEXT PRIMARY KEY,
	seq        INTEGER NOT NULL,
	time       INTEGER NOT NULL,
	hash       TEXT NOT NULL
);
