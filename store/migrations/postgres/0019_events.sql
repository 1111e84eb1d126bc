-- Issue 26: events, a transactional outbox. Every audited change appends its event in the
-- change's own transaction, so an event exists if and only if its change committed. Events are
-- numbered per account by audit_heads.event_seq, whose row each append locks until its commit: an
-- account's events commit in seq order, so a reader that has seen seq N and asks for more misses
-- none.
CREATE TABLE events (
	account_id     TEXT NOT NULL,
	seq            BIGINT NOT NULL,
	id             TEXT NOT NULL,             -- evt_…: webhook-id and Nats-Msg-Id, the same on every try
	time           BIGINT NOT NULL,
	type           TEXT NOT NULL,             -- the audit action; a registration is devices.registered
	device_type_id TEXT NOT NULL DEFAULT '',  -- the device type it is about, for keys restricted to types
	data           TEXT NOT NULL,             -- JSON object
	PRIMARY KEY (account_id, seq)
);
CREATE INDEX events_time ON events (time);

-- The account's newest event, beside its newest audit entry: an append locks that row already.
ALTER TABLE audit_heads ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;

-- Webhooks: an account's receivers of events. The signing secret is sealed (AES-256-GCM) with
-- the server key seal_key_id, never kept in clear. delivered_seq is how far the account's events
-- have been delivered (or passed over: not of its types); attempts, next_attempt and failing_since
-- are the state of the retries of the next; a lease names the server that delivers now.
CREATE TABLE webhooks (
	id             TEXT PRIMARY KEY,
	account_id     TEXT NOT NULL,
	url            TEXT NOT NULL,
	event_types    TEXT NOT NULL,             -- JSON array; [] for all
	enabled        BOOLEAN NOT NULL,
	seal_key_id    TEXT NOT NULL,
	sealed_secret  BYTEA NOT NULL,
	created_at     BIGINT NOT NULL,
	delivered_seq  BIGINT NOT NULL,
	attempts       INTEGER NOT NULL DEFAULT 0,
	next_attempt   BIGINT NOT NULL DEFAULT 0,
	failing_since  BIGINT NOT NULL DEFAULT 0,
	disabled_reason TEXT NOT NULL DEFAULT '',
	lease_owner    TEXT NOT NULL DEFAULT '',
	lease_until    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_account ON webhooks (account_id, created_at, id);

-- Each webhook's delivery attempts, newest kept: what was sent and what came back.
CREATE TABLE webhook_deliveries (
	webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	time       BIGINT NOT NULL,
	event_id   TEXT NOT NULL,
	event_seq  BIGINT NOT NULL,
	event_type TEXT NOT NULL,
	attempt    INTEGER NOT NULL,
	status     INTEGER NOT NULL,              -- the HTTP status; 0 when none came
	error      TEXT NOT NULL,
	answer     TEXT NOT NULL,                 -- the start of the answer's body
	duration_ms BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_time ON webhook_deliveries (webhook_id, time);

-- How far each account's events have been published to a sink that takes every account's
-- events (sink 'nats': --events-nats), with the lease of the server that publishes them now.
CREATE TABLE event_cursors (
	sink        TEXT NOT NULL,
	account_id  TEXT NOT NULL,
	seq         BIGINT NOT NULL,
	lease_owner TEXT NOT NULL DEFAULT '',
	lease_until BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (sink, account_id)
);
