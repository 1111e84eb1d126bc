-- Issue 25: users with roles. The users there were are their accounts' owners, so admins. A user
-- also has a one-time link (an invitation, or a reset) that sets its password: only its SHA-256
-- is kept, with when it stops working, and setting the password clears both in one statement.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE users ADD COLUMN last_login_at INTEGER;
ALTER TABLE users ADD COLUMN link_hash BLOB;
ALTER TABLE users ADD COLUMN link_expires_at INTEGER;
CREATE UNIQUE INDEX users_link ON users (link_hash);
CREATE INDEX users_account ON users (account_id, created_at, id);
CREATE INDEX sessions_user ON sessions (user_id);
