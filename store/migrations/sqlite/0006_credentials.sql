-- A device holds one to five credentials. The registration's credential stays in the device's own
-- row (key_id and secret_hash, with the cred_ columns below, which are NULL where they take their
-- default), so that registering a device still writes one row; the device's further credentials
-- are rows of the credentials table. Every existing device's secret is thus its first credential.
ALTER TABLE devices ADD COLUMN cred_id TEXT;            -- NULL: 'cr_' and the device's batch ID
ALTER TABLE devices ADD COLUMN cred_created_at INTEGER; -- NULL: the device's created_at
ALTER TABLE devices ADD COLUMN cred_not_before INTEGER; -- NULL: no limit
ALTER TABLE devices ADD COLUMN cred_not_after INTEGER;  -- NULL: no limit
ALTER TABLE devices ADD COLUMN cred_status TEXT;        -- NULL: enabled
ALTER TABLE devices ADD COLUMN cred_last_used_at INTEGER;
ALTER TABLE devices ADD COLUMN cred_source TEXT;        -- NULL: registration

CREATE TABLE credentials (
	account_num  INTEGER NOT NULL,
	device_id    TEXT NOT NULL,
	id           TEXT NOT NULL,
	key_id       TEXT NOT NULL, -- which server key made secret_hash
	secret_hash  BLOB NOT NULL, -- HMAC-SHA-256(key, account ID, device ID, secret)
	created_at   INTEGER NOT NULL,
	not_before   INTEGER,
	not_after    INTEGER,
	status       TEXT NOT NULL DEFAULT 'enabled',
	last_used_at INTEGER,
	source       TEXT NOT NULL,
	PRIMARY KEY (account_num, device_id, id)
) WITHOUT ROWID;

-- How long the credential a device rotates away from keeps working, in seconds.
ALTER TABLE device_types ADD COLUMN rotation_grace_seconds INTEGER NOT NULL DEFAULT 604800;
