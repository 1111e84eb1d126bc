package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// The physical limit of the rule a registration by fingerprint adds: one certificate is one
// device's in an account, so every fingerprint goes into a unique index whose keys are random.
// The baselines write, in the raw tool, the smallest table that enforces both rules (one device
// ID per account, one fingerprint per account among the rows that hold certificates), n rows of
// random secrets' hashes and n rows of random fingerprints alternately, runs times, in the order
// the devreg runs go, so that the index holds as many fingerprints at each run as devreg's does.

const smallestCertificatesSQLite = `PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA cache_size=-32768;
PRAGMA wal_autocheckpoint=0;
CREATE TABLE devices (account_num INTEGER NOT NULL, device_id TEXT NOT NULL, cert INTEGER NOT NULL, hash TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE UNIQUE INDEX devices_id ON devices (account_num, device_id);
CREATE UNIQUE INDEX devices_certificate ON devices (account_num, hash) WHERE cert = 1;
`

const smallestCertificatesPostgres = `CREATE TABLE devices (account_num BIGINT NOT NULL, device_id TEXT COLLATE "C" NOT NULL,
	cert BOOLEAN NOT NULL, hash BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (account_num, device_id));
	CREATE UNIQUE INDEX devices_certificate ON devices (account_num, hash) WHERE cert`

// certBaseline is what a baseline measured: the median time of writing n rows by secret and n
// by fingerprint.
type certBaseline struct {
	secrets, fingerprints float64 // seconds
}

// certificateBaselineSQLite times the sqlite3 shell's .import of the rows; the hashes are hex
// text, as the shell imports no blobs.
func certificateBaselineSQLite(dir string, n, runs int) (certBaseline, error) {
	var paths []string
	for run := range runs {
		for _, cert := range []int{0, 1} {
			path := filepath.Join(dir, fmt.Sprintf("cert-baseline-%d-%d.csv", run, cert))
			if err := writeBaselineRows(path, fmt.Sprintf("run%d-%d", run, cert), n, cert); err != nil {
				return certBaseline{}, err
			}
			defer os.Remove(path)
			paths = append(paths, path)
		}
	}
	res, err := importInto(dir, smallestCertificatesSQLite, paths)
	if err != nil {
		return certBaseline{}, err
	}
	var secrets, fingerprints []float64
	for i := 0; i+1 < len(res.times); i += 2 {
		secrets = append(secrets, res.times[i].Seconds())
		fingerprints = append(fingerprints, res.times[i+1].Seconds())
	}
	return certBaseline{secrets: medianOf(secrets), fingerprints: medianOf(fingerprints)}, nil
}

// writeBaselineRows writes n CSV rows of the smallest table: account 1, device IDs that follow
// each other as the bench's do, and random 32-byte hashes in hex.
func writeBaselineRows(path, prefix string, n, cert int) error {
	var b strings.Builder
	raw := make([]byte, 32)
	for i := range n {
		rand.Read(raw)
		fmt.Fprintf(&b, "1,%s-%08d,%d,%s,1700000000000000\n", prefix, i, cert, hex.EncodeToString(raw))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// certificateBaselinePostgres times a COPY of the rows, in a database of its own.
func (b *bench) certificateBaselinePostgres(ctx context.Context) (certBaseline, error) {
	dbURL, drop, err := b.newPGDatabase(ctx)
	if err != nil {
		return certBaseline{}, err
	}
	defer drop()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return certBaseline{}, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, smallestCertificatesPostgres); err != nil {
		return certBaseline{}, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return certBaseline{}, err
	}
	defer conn.Close()
	var secrets, fingerprints []float64
	for run := range b.runs {
		for _, cert := range []bool{false, true} {
			rows := make([][]any, b.n)
			for i := range rows {
				hash := make([]byte, 32)
				rand.Read(hash)
				rows[i] = []any{int64(1), fmt.Sprintf("run%d-%v-%08d", run, cert, i), cert, hash, int64(1700000000000000)}
			}
			start := time.Now()
			err := conn.Raw(func(dc any) error {
				_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"devices"},
					[]string{"account_num", "device_id", "cert", "hash", "created_at"}, pgx.CopyFromRows(rows))
				return err
			})
			if err != nil {
				return certBaseline{}, fmt.Errorf("COPY: %w", err)
			}
			d := time.Since(start).Seconds()
			if cert {
				fingerprints = append(fingerprints, d)
			} else {
				secrets = append(secrets, d)
			}
		}
	}
	return certBaseline{secrets: medianOf(secrets), fingerprints: medianOf(fingerprints)}, nil
}

// print prints the baseline's figures beside devreg's: the ratio, and what a fingerprint costs a
// device more than a secret, in each.
func (c certBaseline) print(tool string, n int, secrets, fingerprints float64) {
	perDevice := func(s, f float64) float64 { return (f - s) / float64(n) * 1e6 }
	fmt.Printf("  baseline, %s into the smallest table with both unique indexes: by secret %.2f s, by fingerprint %.2f s, ratio %.2f\n",
		tool, c.secrets, c.fingerprints, c.fingerprints/c.secrets)
	fmt.Printf("  a fingerprint's cost over a secret's, per device: devreg %.1f µs, baseline %.1f µs\n",
		perDevice(secrets, fingerprints), perDevice(c.secrets, c.fingerprints))
}
