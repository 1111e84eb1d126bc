package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// runCertificates measures registering n devices by certificate fingerprint (certificate_sha256,
// on a device type with a trusted CA) against n devices by secret, through one real server on
// SQLite and, with -postgres, one on PostgreSQL, each into its own new device type, alternately,
// cfg.runs times; it prints the medians, the server's CPU time and their ratio (issue 23 asks for
// at most 1.2), then the same for the raw tool writing the same rows into the smallest table
// that refuses a certificate on two devices (certbaseline.go). Both bodies are JSON, so that
// only the credential differs. -n defaults to 100,000 here; -bin measures another devreg binary.
func runCertificates(cfg config, bin string) error {
	if !flagSet("n") {
		cfg.n = 100_000
	}
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	b, err := newBench(cfg, bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ctx := context.Background()
	return b.onEachDatabase(ctx, func(db string, args ...string) error {
		baseline := func() (certBaseline, string, error) {
			c, err := certificateBaselineSQLite(b.dir, b.n, b.runs)
			return c, "sqlite3 " + sqliteVersion() + " .import", err
		}
		if db == "PostgreSQL" {
			baseline = func() (certBaseline, string, error) {
				c, err := b.certificateBaselinePostgres(ctx)
				return c, "COPY", err
			}
		}
		return b.certificateRuns(ctx, db, baseline, args...)
	})
}

// onEachDatabase runs run for SQLite (no more server flags) and, with -postgres, for PostgreSQL
// (args: --database and a database of its own, dropped after).
func (b *bench) onEachDatabase(ctx context.Context, run func(db string, args ...string) error) error {
	if err := run("SQLite"); err != nil {
		return err
	}
	if b.pg == "" {
		return nil
	}
	dbURL, drop, err := b.newPGDatabase(ctx)
	if err != nil {
		return err
	}
	defer drop()
	return run("PostgreSQL", "--database", dbURL)
}

// certificateRuns measures and prints, on one server started with args, registrations by secret
// and by fingerprint, alternately, then the baseline.
func (b *bench) certificateRuns(ctx context.Context, db string, baseline func() (certBaseline, string, error), args ...string) error {
	srv, err := b.startServer(ctx, "certificates-"+db, args...)
	if err != nil {
		return err
	}
	defer srv.stop()
	caPEM, err := benchCA()
	if err != nil {
		return err
	}
	var secrets, fingerprints []measure
	for run := range b.runs {
		for _, byCert := range []bool{false, true} {
			name := fmt.Sprintf("run%d-%v", run, byCert)
			typeID, err := srv.newType(ctx, name)
			if err != nil {
				return err
			}
			if byCert {
				if err := addCA(ctx, srv, typeID, caPEM); err != nil {
					return err
				}
			}
			path := filepath.Join(b.dir, name+".json")
			if err := writeCredentialFile(path, name, b.n, byCert); err != nil {
				return err
			}
			m, err := srv.register(ctx, name, typeID, path, "application/json", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(b.n) })
			os.Remove(path)
			if err != nil {
				return err
			}
			if *certStages {
				fmt.Printf("  %s %s: %.2f s, server CPU %.2f s, stages %v\n", db, name, m.value, m.cpu, m.stages)
			}
			if byCert {
				fingerprints = append(fingerprints, m)
			} else {
				secrets = append(secrets, m)
			}
		}
	}
	wall := func(m measure) float64 { return m.value }
	cpu := func(m measure) float64 { return m.cpu }
	s, f := medianBy(secrets, wall), medianBy(fingerprints, wall)
	sc, fc := medianBy(secrets, cpu), medianBy(fingerprints, cpu)
	fmt.Printf("devreg-bench certificates: %d devices per request, one %s server, %d runs (median)\n", b.n, db, b.runs)
	fmt.Printf("  by secret:             %7.2f s  (%.0f devices/s), server CPU %.2f s\n", s, float64(b.n)/s, sc)
	fmt.Printf("  by certificate_sha256: %7.2f s  (%.0f devices/s), server CPU %.2f s\n", f, float64(b.n)/f, fc)
	fmt.Printf("  ratio fingerprint/secret: %.2f, of server CPU %.2f (issue 23: at most 1.2)\n", f/s, fc/sc)
	srv.stop()
	c, tool, err := baseline()
	if err != nil {
		return err
	}
	c.print(tool, b.n, s, f)
	return nil
}

var certStages = flag.Bool("certificate-stages", false, "with certificates: print each registration's Server-Timing stages")

// flagSet reports whether the command line set the flag.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// medianBy returns the median of what of ms, in seconds.
func medianBy(ms []measure, what func(measure) float64) float64 {
	xs := make([]float64, len(ms))
	for i, m := range ms {
		xs[i] = what(m)
	}
	return medianOf(xs)
}

// medianOf returns the median of xs, in seconds.
func medianOf(xs []float64) float64 {
	ds := make([]time.Duration, len(xs))
	for i, x := range xs {
		ds[i] = time.Duration(x * float64(time.Second))
	}
	return median(ds).Seconds()
}

// writeCredentialFile writes a JSON registration body of n devices, each with a random secret or
// a random fingerprint.
func writeCredentialFile(path, prefix string, n int, byCert bool) error {
	var buf bytes.Buffer
	buf.WriteString(`{"devices": [`)
	raw := make([]byte, 32)
	for i := range n {
		if i > 0 {
			buf.WriteString(",\n")
		}
		rand.Read(raw)
		field, value := "secret", hex.EncodeToString(raw[:16])
		if byCert {
			field, value = "certificate_sha256", hex.EncodeToString(raw)
		}
		fmt.Fprintf(&buf, `{"device_id": "%s-%08d", "%s": "%s"}`, prefix, i, field, value)
	}
	buf.WriteString("]}\n")
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

// benchCA makes a self-signed CA certificate for the bench's device types.
func benchCA() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "devreg bench factory CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// addCA makes caPEM a trusted CA of the device type.
func addCA(ctx context.Context, srv *server, typeID, caPEM string) error {
	body, _ := json.Marshal(map[string]string{"certificate": caPEM})
	req, err := http.NewRequestWithContext(ctx, "POST", srv.url+"/api/v1/devicetypes/"+url.PathEscape(typeID)+"/cas", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+srv.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("add CA: HTTP %d", resp.StatusCode)
	}
	return nil
}
