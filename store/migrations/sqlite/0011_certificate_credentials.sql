-- A credential may be a certificate (issue 23). It is kept where a secret is, so that registering
-- a device by its certificate still writes one row: key_id 'x509:sha256' (which no server key can
-- be called, since key IDs hold no ':') and secret_hash the SHA-256 of the certificate's DER.
-- One certificate is one device's: the fingerprint is unique in each table (registration and
-- credential changes check across both, under the write lock).
CREATE UNIQUE INDEX devices_certificate ON devices (account_num, secret_hash) WHERE key_id = 'x509:sha256';
CREATE UNIQUE INDEX credentials_certificate ON credentials (account_num, secret_hash) WHERE key_id = 'x509:sha256';

-- What a certificate given whole (PEM) said, by fingerprint; a certificate registered by
-- fingerprint alone has no row here.
CREATE TABLE certificate_details (
	account_num INTEGER NOT NULL,
	sha256      BLOB NOT NULL,
	subject     TEXT NOT NULL,
	issuer      TEXT NOT NULL,
	serial      TEXT NOT NULL, -- hexadecimal, as OpenSSL prints it
	not_before  INTEGER NOT NULL,
	not_after   INTEGER NOT NULL,
	PRIMARY KEY (account_num, sha256)
) WITHOUT ROWID;
