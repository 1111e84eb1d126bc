-- Devices are kept in registration order (a rowid table): new registrations append, and only the
-- unique (account, device ID) index takes keys in random order. Listings page by that order
-- (or by device ID when searching a prefix).
CREATE TABLE devices_v2 (
	seq              INTEGER PRIMARY KEY, -- registration order
	account_id       TEXT NOT NULL,
	device_id        TEXT NOT NULL,
	device_type_id   TEXT NOT NULL,
	batch_id         TEXT NOT NULL,
	status           TEXT NOT NULL DEFAULT 'enabled',
	key_id           TEXT NOT NULL, -- which server key made secret_hash
	secret_hash      BLOB NOT NULL, -- HMAC-SHA-256(key, account ID, device ID, secret)
	created_at       INTEGER NOT NULL,
	last_seen_at     INTEGER,
	firmware_version TEXT,
	reported_status  TEXT
);
INSERT INTO devices_v2 (account_id, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at, last_seen_at, firmware_version, reported_status)
	SELECT account_id, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at, last_seen_at, firmware_version, reported_status
	FROM devices ORDER BY created_at, device_id;
DROP TABLE devices;
ALTER TABLE devices_v2 RENAME TO devices;
CREATE UNIQUE INDEX devices_id ON devices (account_id, device_id);
CREATE INDEX devices_account ON devices (account_id, seq);
CREATE INDEX devices_type ON devices (account_id, device_type_id, seq);
CREATE INDEX devices_batch ON devices (account_id, batch_id, seq);
