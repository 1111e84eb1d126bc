-- Issue 23: the CA certificates a device type trusts for its devices' certificates (1 to 10 per
-- type), kept whole (der) so that a certificate login verifies against them with one indexed read.
CREATE TABLE device_type_cas (
	device_type_id TEXT NOT NULL REFERENCES device_types (id) ON DELETE CASCADE,
	id             TEXT NOT NULL,
	account_id     TEXT NOT NULL,
	sha256         BLOB NOT NULL, -- SHA-256 of der
	subject        TEXT NOT NULL,
	not_after      INTEGER NOT NULL,
	der            BLOB NOT NULL,
	created_at     INTEGER NOT NULL,
	PRIMARY KEY (device_type_id, id),
	UNIQUE (device_type_id, sha256)
) WITHOUT ROWID;

-- Where a device's certificate carries its device ID: subject_cn, san_uri or san_dns.
ALTER TABLE device_types ADD COLUMN certificate_id_field TEXT NOT NULL DEFAULT 'subject_cn';
-- Just-in-time registration of devices whose certificate chains to a CA of the type, and how
-- many devices it may register in an hour.
ALTER TABLE device_types ADD COLUMN auto_register INTEGER NOT NULL DEFAULT 0;
ALTER TABLE device_types ADD COLUMN auto_register_limit INTEGER NOT NULL DEFAULT 100;
