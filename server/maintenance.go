package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"devreg/credential"
	"devreg/registry"
	"devreg/store"
)

// Check checks the registry's data in one consistent snapshot, while servers may keep writing:
// that the schema version is this build's, that every counter equals its rows, that every secret
// hash was made with a key of the key file, and that every account's audit chain verifies. It
// migrates nothing and creates no key file. A finding is a CheckResult with Problems; the error
// is for a check that could not run.
func Check(ctx context.Context, cfg Config) ([]store.CheckResult, error) {
	db, err := store.OpenExisting(ctx, cfg.DatabaseURL())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	keys, err := readKeyring(cfg.KeyFile())
	if err != nil {
		return nil, err
	}
	keyFile := cfg.KeyFile()
	if keys == nil {
		keyFile += " (which does not exist)"
	}
	hasKey := func(id string) bool {
		if keys == nil {
			return false
		}
		_, ok := keys.Lookup(id)
		return ok
	}
	var results []store.CheckResult
	err = db.ReadSnapshot(ctx, func(view *store.DB) error {
		schema, err := view.CheckSchema(ctx)
		if err != nil {
			return err
		}
		results = append(results, schema)
		if len(schema.Problems) > 0 {
			results[0].Problems = append(results[0].Problems, "the counters, hash keys and audit log were not checked: those checks read this devreg's schema")
			return nil
		}
		counters, err := view.CheckCounters(ctx)
		if err != nil {
			return fmt.Errorf("check the counters: %w", err)
		}
		hashKeys, err := view.CheckHashKeys(ctx, hasKey, keyFile)
		if err != nil {
			return fmt.Errorf("check the hash keys: %w", err)
		}
		heads, err := view.AuditAccounts(ctx)
		if err != nil {
			return fmt.Errorf("check the audit log: %w", err)
		}
		findings, err := registry.New(view, keys).VerifyAudit(ctx, nil)
		if err != nil {
			return fmt.Errorf("check the audit log: %w", err)
		}
		audit := store.CheckResult{Name: "audit log", Summary: fmt.Sprintf("the chains of %d account(s)", len(heads))}
		for _, f := range findings {
			audit.Problems = append(audit.Problems, f.String())
		}
		results = append(results, counters, hashKeys, audit)
		return nil
	})
	return results, err
}

// Backup writes a consistent copy of the embedded database to the new file to while servers keep
// serving; see store.DB.Backup. Key files are not in it: they are backed up apart.
func Backup(ctx context.Context, cfg Config, to string) (store.BackupInfo, error) {
	if store.IsPostgres(cfg.DatabaseURL()) {
		return store.BackupInfo{}, store.ErrBackupPostgres
	}
	db, err := store.OpenExisting(ctx, cfg.DatabaseURL())
	if err != nil {
		return store.BackupInfo{}, err
	}
	defer db.Close()
	return db.Backup(ctx, to)
}

// Restore puts the backup from in place of the embedded database; see store.Restore. It refuses a
// backup whose hashes were made with keys that the key file lacks, naming them: no device of
// theirs could log in after it.
func Restore(ctx context.Context, cfg Config, from string, opts store.RestoreOptions) (store.RestoreInfo, error) {
	url := cfg.DatabaseURL()
	if store.IsPostgres(url) {
		return store.RestoreInfo{}, errors.New("devreg restore puts back the embedded SQLite database; restore PostgreSQL with its own tools: " +
			"pg_restore (or psql, for a plain pg_dump) into a new, empty database (see the README)")
	}
	opts.Accept = func(info store.SnapshotInfo) error {
		keys, err := readKeyring(cfg.KeyFile())
		if err != nil {
			return err
		}
		var missing []string
		for _, id := range info.KeyIDs {
			if keys == nil {
				missing = append(missing, id)
			} else if _, ok := keys.Lookup(id); !ok {
				missing = append(missing, id)
			}
		}
		switch {
		case len(missing) == 0:
			return nil
		case keys == nil:
			return fmt.Errorf("the backup's device secrets were hashed with the key(s) %s, but there is no key file at %s: "+
				"no device could log in after the restore; copy the key file from where you back key files up to %s, then restore",
				strings.Join(missing, ", "), cfg.KeyFile(), cfg.KeyFile())
		default:
			return fmt.Errorf("the backup's device secrets were hashed with the key(s) %s, which %s lacks: "+
				"no such device could log in after the restore; put back the key file that holds them (from where you back key files up), then restore",
				strings.Join(missing, ", "), cfg.KeyFile())
		}
	}
	return store.Restore(ctx, from, strings.TrimPrefix(url, "sqlite:"), opts)
}

// readKeyring reads the secret key file at path, or returns nil when there is none: the commands
// that look at data never create a key file.
func readKeyring(path string) (*credential.Keyring, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return credential.LoadOrCreateKeyring(path)
}
