package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"devreg"
	"devreg/registry"
	"devreg/server"
	"devreg/store"
)

// headFlags collects --head values: SEQ:HASH, or ACCOUNT_ID:SEQ:HASH for one account's chain.
type headFlags []registry.HeadClaim

func (h *headFlags) String() string { return "" }

func (h *headFlags) Set(v string) error {
	var claim registry.HeadClaim
	if parts := strings.Split(v, ":"); len(parts) == 3 {
		claim.AccountID, v = parts[0], parts[1]+":"+parts[2]
	}
	head, err := devreg.ParseAuditHead(v)
	if err != nil {
		return err
	}
	claim.Head = head
	*h = append(*h, claim)
	return nil
}

// auditVerify checks every account's audit chain in the database and exits 1 on any finding.
func (m *Main) auditVerify(ctx context.Context, args []string) error {
	var cfg server.Config
	var heads headFlags
	fs := m.flagSet("audit verify", "audit verify [--data DIR] [--database URL] [--head [ACCOUNT_ID:]SEQ:HASH]...\n\n"+
		"Checks every account's audit chain: each entry's hash follows from the one before, no entry is\n"+
		"missing, changed or inserted, and the stored head is the last entry. Someone who can write the\n"+
		"database could recompute a whole chain or cut its end; --head checks that an entry whose hash\n"+
		"you kept elsewhere (the head the audit listing and export report) is still in the chain,\n"+
		"unchanged. Exits 1 naming the first entry that breaks.\n\n"+
		"Example:\n  devreg audit verify --data /var/lib/devreg --head 1842:3f9c...e1")
	fs.Var(&heads, "head", "an entry `[ACCOUNT_ID:]SEQ:HASH` kept elsewhere that must still be in the chain (repeatable)")
	m.serverFlags(fs, &cfg)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// The auditor's tool: it reads the database as it is (no migration) and needs no key file.
	db, err := store.OpenExisting(ctx, cfg.DatabaseURL())
	if err != nil {
		return err
	}
	defer db.Close()
	// One snapshot: servers may append while it reads.
	var findings []registry.AuditFinding
	err = db.ReadSnapshot(ctx, func(view *store.DB) error {
		var err error
		findings, err = registry.New(view, nil).VerifyAudit(ctx, heads)
		return err
	})
	if err != nil {
		return err
	}
	if len(findings) == 0 {
		fmt.Fprintf(m.Stdout, "audit log: every chain verifies")
		if len(heads) > 0 {
			fmt.Fprintf(m.Stdout, ", and holds the %d head(s) given", len(heads))
		}
		fmt.Fprintln(m.Stdout)
		return nil
	}
	for _, f := range findings {
		fmt.Fprintln(m.Stdout, "BROKEN:", f)
	}
	return errors.New("the audit log does not verify; see above")
}
