package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"devreg/server"
	"devreg/store"
)

// backup writes a consistent copy of the embedded database while the server runs.
func (m *Main) backup(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("backup", "backup --to FILE [--data DIR]\n\n"+
		"Writes a consistent copy of the embedded SQLite database to FILE, a new file, while the server\n"+
		"keeps serving and registering. The copy is checked (SQLite's integrity check, rows per table)\n"+
		"before it gets its name, so a failed or interrupted backup leaves no file that looks good.\n"+
		"Prints a JSON summary, with the IDs of the secret-hashing keys the copy needs. The key files\n"+
		"are never in the backup: back them up apart (see the README). For PostgreSQL use pg_dump.\n"+
		"FILE may not be in the data directory, nor end in -journal, -wal or -shm: SQLite would take it\n"+
		"for a file of a database and delete it.\n\n"+
		"Example:\n  devreg backup --data /var/lib/devreg --to /var/backups/devreg/devreg-$(date -u +%Y%m%dT%H%M%SZ).db")
	to := fs.String("to", "", "the new `FILE` to write the backup to (required; never replaced)")
	m.serverFlags(fs, &cfg)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return usageError{"--to is required"}
	}
	start := time.Now()
	info, err := server.Backup(ctx, cfg, *to)
	if err != nil {
		return err
	}
	out := struct {
		File          string           `json:"file"`
		Time          time.Time        `json:"time"`
		Size          int64            `json:"size"`
		Seconds       float64          `json:"seconds"`
		SchemaVersion int              `json:"schema_version"`
		Devices       int64            `json:"devices"`
		Accounts      int64            `json:"accounts"`
		KeyIDs        []string         `json:"key_ids"`
		Tables        map[string]int64 `json:"tables"`
	}{info.File, info.Time, info.Size, time.Since(start).Seconds(), info.SchemaVersion,
		info.Tables["devices"], info.Tables["accounts"], append([]string{}, info.KeyIDs...), info.Tables}
	return json.NewEncoder(m.Stdout).Encode(out)
}

// restore puts a backup in place of the embedded database.
func (m *Main) restore(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("restore", "restore --from FILE [--data DIR] [--force]\n\n"+
		"Puts the backup FILE in place of the embedded SQLite database, after checking it. Refuses while\n"+
		"anything uses the data directory (a server, or any devreg command: they hold DIR/devreg.lock),\n"+
		"refuses to replace an existing database without --force (which keeps it beside, as\n"+
		"devreg.db.before-restore-TIME), refuses a backup whose secret hashes need keys that the\n"+
		"data directory's key file lacks (put the key files back first), and refuses one that holds\n"+
		"tables, indexes, triggers or views devreg's migrations do not make. Says what it will write,\n"+
		"and the free room, before it writes; refuses when the room is short.\n\n"+
		"Example:\n  devreg restore --data /var/lib/devreg --from /var/backups/devreg/devreg-20261101T020000Z.db")
	from := fs.String("from", "", "the backup `FILE` to restore (required)")
	force := fs.Bool("force", false, "replace an existing database, keeping it beside as devreg.db.before-restore-TIME")
	m.serverFlags(fs, &cfg)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from == "" {
		return usageError{"--from is required"}
	}
	info, err := server.Restore(ctx, cfg, *from, store.RestoreOptions{
		Force:    *force,
		DiskFree: m.DiskFree,
		Plan:     func(p store.RestorePlan) { fmt.Fprintln(m.Stdout, p) },
	})
	if err != nil {
		return err
	}
	keys := "no keys"
	if len(info.KeyIDs) > 0 {
		keys = "the key(s) " + strings.Join(info.KeyIDs, ", ") + ", all in " + cfg.KeyFile()
	}
	fmt.Fprintf(m.Stdout, "restored %s into %s: schema version %d, %d account(s), %d device(s); its hashes need %s\n",
		*from, strings.TrimPrefix(cfg.DatabaseURL(), "sqlite:"), info.SchemaVersion, info.Tables["accounts"], info.Tables["devices"], keys)
	if info.Previous != "" {
		fmt.Fprintf(m.Stdout, "the database it replaced is kept as %s\n", info.Previous)
	}
	fmt.Fprintf(m.Stdout, "next: devreg check --data %s, then start the server\n", cfg.DataDir)
	return nil
}

// maxProblemsShown bounds the problems the check prints for each thing it checks.
const maxProblemsShown = 50

// check checks that the registry's data adds up, in one snapshot, and exits 1 on any finding.
func (m *Main) check(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("check", "check [--data DIR] [--database URL]\n\n"+
		"Checks, in one consistent snapshot and while servers keep running, that the schema version is\n"+
		"this devreg's, that every counter equals its rows (devices per type and per batch, connected\n"+
		"devices per batch), that every secret hash's key is in the key file, that every account's\n"+
		"audit chain verifies, and that the schema holds exactly the tables, indexes, triggers and views\n"+
		"devreg's migrations make. Changes no data. Exits 1 on any finding.\n\n"+
		"Example:\n  devreg check --data /var/lib/devreg")
	m.serverFlags(fs, &cfg)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	results, err := server.Check(ctx, cfg)
	if err != nil {
		return err
	}
	problems := 0
	for _, r := range results {
		if len(r.Problems) == 0 {
			fmt.Fprintf(m.Stdout, "ok       %s: %s\n", r.Name, r.Summary)
			continue
		}
		problems += len(r.Problems)
		fmt.Fprintf(m.Stdout, "PROBLEM  %s: %s\n", r.Name, r.Summary)
		for i, p := range r.Problems {
			if i == maxProblemsShown {
				fmt.Fprintf(m.Stdout, "         - ... and %d more\n", len(r.Problems)-i)
				break
			}
			fmt.Fprintf(m.Stdout, "         - %s\n", p)
		}
	}
	if problems > 0 {
		return fmt.Errorf("check found %d problem(s); see above", problems)
	}
	fmt.Fprintln(m.Stdout, "the registry adds up")
	return nil
}
