-- Console sessions, so that several servers can share them; the cookie holds a random token and
-- only its SHA-256 is stored.
CREATE TABLE sessions (
	token_hash BYTEA PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Failed attempts per key (a console login's email, later a device's account and ID) within a
-- fixed window that starts at the first failure: the throttles' shared memory.
CREATE TABLE failures (
	key          TEXT PRIMARY KEY,
	window_start BIGINT NOT NULL,
	count        INTEGER NOT NULL
);
CREATE INDEX failures_window ON failures (window_start);
