-- Issue 24: enrollment groups. A group of a device type registers, at its first connection, an
-- unknown device whose ID matches id_pattern and whose secret is derived (as Azure DPS derives
-- it) from one of the group's live keys.
CREATE TABLE enrollment_groups (
	id             TEXT PRIMARY KEY,
	account_id     TEXT NOT NULL,
	device_type_id TEXT NOT NULL REFERENCES device_types (id) ON DELETE CASCADE,
	name           TEXT NOT NULL,
	id_pattern     TEXT NOT NULL,      -- anchored RE2 (enrollpattern)
	max_devices    BIGINT NOT NULL,   -- devices the group may register in all
	max_per_hour   INTEGER NOT NULL,   -- devices it may register in an hour (the throttle table counts them)
	not_before     BIGINT,            -- NULL: no limit
	not_after      BIGINT,            -- NULL: no limit
	status         TEXT NOT NULL DEFAULT 'enabled',
	temporary      BOOLEAN NOT NULL DEFAULT TRUE,  -- the derived secret ends after the type's rotation grace
	allow_list     BOOLEAN NOT NULL DEFAULT FALSE, -- only the IDs of enrollment_allowed_ids enrol
	enrolled_count BIGINT NOT NULL DEFAULT 0, -- devices it registered, counted against max_devices
	created_at     BIGINT NOT NULL
);
CREATE INDEX enrollment_groups_account ON enrollment_groups (account_id, created_at, id);
CREATE INDEX enrollment_groups_type ON enrollment_groups (device_type_id, created_at, id);

-- A group's keys: 32 random bytes each, sealed (AES-256-GCM) with the server key seal_key_id of
-- the secret key file, never kept in clear. A rotated-away key ends at not_after.
CREATE TABLE enrollment_group_keys (
	group_id    TEXT NOT NULL REFERENCES enrollment_groups (id) ON DELETE CASCADE,
	id          TEXT NOT NULL,
	seal_key_id TEXT NOT NULL,
	sealed      BYTEA NOT NULL,
	created_at  BIGINT NOT NULL,
	not_after   BIGINT, -- NULL: no end
	PRIMARY KEY (group_id, id)
);

-- The device IDs a group with allow_list on lets enrol.
CREATE TABLE enrollment_allowed_ids (
	group_id  TEXT NOT NULL REFERENCES enrollment_groups (id) ON DELETE CASCADE,
	device_id TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (group_id, device_id)
);

-- Every device ID a group registered, kept when the device is deleted: an ID enrols through a
-- group once, until an administrator re-allows it (reenroll deletes its row).
CREATE TABLE enrollments (
	account_num BIGINT NOT NULL,
	device_id   TEXT COLLATE "C" NOT NULL,
	group_id    TEXT NOT NULL,
	enrolled_at BIGINT NOT NULL,
	PRIMARY KEY (account_num, device_id)
);
CREATE INDEX enrollments_group ON enrollments (group_id, device_id);

-- Enrollment puts the devices a group registers into one batch per group and UTC day.
ALTER TABLE batches ADD COLUMN enrollment_group_id TEXT;
CREATE INDEX batches_enrollment ON batches (enrollment_group_id, created_at) WHERE enrollment_group_id IS NOT NULL;
