-- Times are Unix microseconds (UTC). IDs are opaque strings chosen by the server. Device IDs
-- compare bytewise (COLLATE "C"), so listing order and prefix ranges do not depend on the locale.
CREATE TABLE accounts (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	created_at BIGINT NOT NULL
);

CREATE TABLE users (
	id            TEXT PRIMARY KEY,
	account_id    TEXT NOT NULL REFERENCES accounts (id),
	email         TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
	id           TEXT PRIMARY KEY,
	account_id   TEXT NOT NULL REFERENCES accounts (id),
	name         TEXT NOT NULL,
	scope        TEXT NOT NULL,
	key_hash     BYTEA NOT NULL UNIQUE,
	created_at   BIGINT NOT NULL,
	last_used_at BIGINT
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);

CREATE TABLE device_types (
	id                TEXT PRIMARY KEY,
	account_id        TEXT NOT NULL REFERENCES accounts (id),
	name              TEXT NOT NULL,
	description       TEXT NOT NULL DEFAULT '',
	min_secret_length INTEGER NOT NULL DEFAULT 0,
	device_count      BIGINT NOT NULL DEFAULT 0, -- kept by every write, so reads never count rows
	created_at        BIGINT NOT NULL,
	UNIQUE (account_id, name)
);

CREATE TABLE batches (
	seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- keyset order, newest last
	id              TEXT NOT NULL UNIQUE,
	account_id      TEXT NOT NULL REFERENCES accounts (id),
	device_type_id  TEXT NOT NULL,
	created_at      BIGINT NOT NULL,
	created_by      TEXT NOT NULL,
	source          TEXT NOT NULL,
	filename        TEXT NOT NULL DEFAULT '',
	device_count    BIGINT NOT NULL DEFAULT 0,
	connected_count BIGINT NOT NULL DEFAULT 0,
	status          TEXT NOT NULL DEFAULT 'enabled'
);
CREATE INDEX batches_account ON batches (account_id, seq);
CREATE INDEX batches_type ON batches (account_id, device_type_id, seq);

CREATE TABLE devices (
	account_id       TEXT NOT NULL,
	device_id        TEXT COLLATE "C" NOT NULL,
	device_type_id   TEXT NOT NULL,
	batch_id         TEXT NOT NULL,
	status           TEXT NOT NULL DEFAULT 'enabled',
	key_id           TEXT NOT NULL, -- which server key made secret_hash
	secret_hash      BYTEA NOT NULL, -- HMAC-SHA-256(key, account ID, device ID, secret)
	created_at       BIGINT NOT NULL,
	last_seen_at     BIGINT,
	firmware_version TEXT,
	reported_status  TEXT,
	PRIMARY KEY (account_id, device_id)
);
CREATE INDEX devices_type ON devices (account_id, device_type_id, device_id);
CREATE INDEX devices_batch ON devices (account_id, batch_id, device_id);
