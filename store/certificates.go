package store

import (
	"context"
	"fmt"
	"strings"

	"devreg"
)

// Certificate credentials are stored where secrets are (key_id devreg.CertificateKeyID, the
// fingerprint in secret_hash), so that a registration by certificate writes one row per device as
// one by secret does. A certificate is one device's only: the partial unique indexes of migration
// 0011 hold that within each table, and certificateHolder across both, under the account's lock.

// certificateHolder returns the device, other than deviceID, that holds the certificate with
// fingerprint sha as a credential, or "" if none does.
func certificateHolder(ctx context.Context, q handle, account int64, sha []byte, deviceID string) (string, error) {
	rows, err := q.QueryContext(ctx, `SELECT device_id FROM devices WHERE account_num = ? AND `+certificateKey+` AND secret_hash = ? AND device_id <> ?
		UNION ALL SELECT device_id FROM credentials WHERE account_num = ? AND `+certificateKey+` AND secret_hash = ? AND device_id <> ?`,
		account, sha, deviceID, account, sha, deviceID)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	holder := ""
	if rows.Next() {
		if err := rows.Scan(&holder); err != nil {
			return "", err
		}
	}
	return holder, rows.Err()
}

// detailsChunk is how many certificates one insert of their details carries.
const detailsChunk = 100

// insertCertificateDetails keeps what certificates given whole said, by fingerprint; a
// fingerprint whose details are kept already keeps them (the same fingerprint is the same
// certificate).
func insertCertificateDetails(ctx context.Context, q handle, account int64, details []devreg.CertificateDetails) error {
	for len(details) > 0 {
		n := min(len(details), detailsChunk)
		args := make([]any, 0, 7*n)
		for _, d := range details[:n] {
			args = append(args, account, d.SHA256[:], d.Subject, d.Issuer, d.Serial, micros(d.NotBefore), micros(d.NotAfter))
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO certificate_details (account_num, sha256, subject, issuer, serial, not_before, not_after)
			VALUES `+strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?), ", n), ", ")+`
			ON CONFLICT (account_num, sha256) DO NOTHING`, args...); err != nil {
			return fmt.Errorf("keep certificate details: %w", err)
		}
		details = details[n:]
	}
	return nil
}

// CertificateDetails returns what is kept of the certificates with the given fingerprints (those
// given whole; a certificate registered by fingerprint alone has nothing kept), by fingerprint.
func (s *DB) CertificateDetails(ctx context.Context, accountID string, fingerprints [][]byte) (map[[32]byte]devreg.CertificateDetails, error) {
	out := map[[32]byte]devreg.CertificateDetails{}
	if len(fingerprints) == 0 {
		return out, nil
	}
	args := []any{accountID}
	for _, f := range fingerprints {
		args = append(args, f)
	}
	rows, err := s.h.QueryContext(ctx, `SELECT sha256, subject, issuer, serial, not_before, not_after FROM certificate_details
		WHERE account_num = `+accountNum+` AND sha256 IN (`+placeholders(len(fingerprints))+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var d devreg.CertificateDetails
		var sha []byte
		var nb, na int64
		if err := rows.Scan(&sha, &d.Subject, &d.Issuer, &d.Serial, &nb, &na); err != nil {
			return nil, err
		}
		copy(d.SHA256[:], sha)
		d.NotBefore, d.NotAfter = fromMicros(nb), fromMicros(na)
		out[d.SHA256] = d
	}
	return out, rows.Err()
}

// checkAddedCertificate refuses a change that adds a certificate another device holds, and keeps
// the certificate's details; nothing for a change that adds a secret.
func checkAddedCertificate(ctx context.Context, tx handle, accountID, deviceID string, ch devreg.CredentialChange) error {
	if ch.Add == nil || ch.Add.KeyID != devreg.CertificateKeyID {
		return nil
	}
	account, err := accountNumber(ctx, tx, accountID)
	if err != nil {
		return err
	}
	holder, err := certificateHolder(ctx, tx, account, ch.Add.Hash, deviceID)
	if err != nil {
		return err
	}
	if holder != "" {
		return devreg.Errorf(devreg.ECONFLICT, "this certificate (SHA-256 %x) is a credential of another device already; a certificate may belong to one device only", ch.Add.Hash)
	}
	if ch.Certificate != nil {
		return insertCertificateDetails(ctx, tx, account, []devreg.CertificateDetails{*ch.Certificate})
	}
	return nil
}

// isCertificates reports whether a registration registers certificates.
func isCertificates(reg devreg.Registration) bool {
	return len(reg.KeyIDs) == 1 && reg.KeyIDs[0] == devreg.CertificateKeyID
}

// certificateKey is the condition, with the key ID written out, that a row of devices or
// credentials holds a certificate: the partial unique indexes of migration 0011 are used only
// for a query that names their condition's constant itself, not a parameter.
const certificateKey = `key_id = 'x509:sha256'`

// certificatesTakenIn reports whether a registration of certificates that has just inserted its
// devices (batch reg.Batch) gave one of them a certificate that another device holds in the
// credentials table; the devices table's unique index refuses the others while inserting.
func (st *stage) certificatesTakenIn(ctx context.Context, q handle, reg devreg.Registration, account int64) (bool, error) {
	if !isCertificates(reg) {
		return false, nil
	}
	// Driven by the credentials table's certificates, which are few next to a batch: each is one
	// look into devices' fingerprint index.
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM credentials c WHERE c.account_num = ? AND c.`+certificateKey+`
		AND EXISTS (SELECT 1 FROM devices d WHERE d.account_num = c.account_num AND d.`+certificateKey+`
			AND d.secret_hash = c.secret_hash AND d.batch_id = ? AND d.device_id <> c.device_id)`, account, reg.Batch.ID).Scan(&n)
	return n > 0, err
}

// takenSQL is the condition that staged entry s's certificate is in another device's row or
// credentials (two parameters: the account number, twice).
const takenSQL = `(EXISTS (SELECT 1 FROM devices d WHERE d.account_num = ? AND d.` + certificateKey + ` AND d.secret_hash = s.hashes AND d.device_id <> s.device_id)
	OR EXISTS (SELECT 1 FROM credentials c WHERE c.account_num = ? AND c.` + certificateKey + ` AND c.secret_hash = s.hashes AND c.device_id <> s.device_id))`

// certificatesTaken counts the entries of a registration of certificates that would give a
// device a certificate another device holds: among the new entries, and among the conflicting
// ones (which a replace writes). It runs under the registration's lock, after classify.
func (st *stage) certificatesTaken(ctx context.Context, q handle, reg devreg.Registration, account int64) (taken, takenConflicting int64, err error) {
	if !isCertificates(reg) {
		return 0, 0, nil
	}
	err = q.QueryRowContext(ctx, `SELECT coalesce(sum(CASE WHEN s.action = 0 THEN 1 ELSE 0 END), 0), coalesce(sum(CASE WHEN s.action = 2 THEN 1 ELSE 0 END), 0)
		FROM `+st.table+` s WHERE s.action IN (0, 2) AND `+takenSQL, account, account).Scan(&taken, &takenConflicting)
	if err != nil {
		return 0, 0, fmt.Errorf("look for certificates of other devices: %w", err)
	}
	return taken, takenConflicting, nil
}

// eachTaken hands fn, in index order, the entries certificatesTaken counts: the new ones, and
// the conflicting ones too when replace.
func (st *stage) eachTaken(ctx context.Context, q handle, account int64, replace bool, fn func(devreg.Conflict)) error {
	written := `s.action = 0`
	if replace {
		written = `s.action IN (0, 2)`
	}
	rows, err := q.QueryContext(ctx, `SELECT s.idx, s.line, s.device_id FROM `+st.table+` s WHERE `+written+` AND `+takenSQL+`
		ORDER BY s.idx`, account, account)
	if err != nil {
		return fmt.Errorf("look for certificates of other devices: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		c := devreg.Conflict{CertificateTaken: true}
		if err := rows.Scan(&c.Index, &c.Line, &c.DeviceID); err != nil {
			return err
		}
		fn(c)
	}
	return rows.Err()
}
