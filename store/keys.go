package store

import (
	"context"
	"sort"

	"devreg"
)

// HashKeyIDs returns the IDs of the secret-hashing keys that the stored hashes were made with.
// Certificate credentials, which no key made, are not counted. It reads every device, so it is for start-up and checks, not for requests.
func (s *DB) HashKeyIDs(ctx context.Context) ([]string, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT key_id FROM devices WHERE key_id <> ? UNION SELECT key_id FROM credentials WHERE key_id <> ?`,
		devreg.CertificateKeyID, devreg.CertificateKeyID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, rows.Err()
}

// HasDevices reports whether any account has a device.
func (s *DB) HasDevices(ctx context.Context) (bool, error) {
	var n int
	err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM devices LIMIT 1) d`).Scan(&n)
	return n > 0, err
}
