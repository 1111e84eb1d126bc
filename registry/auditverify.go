package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"devreg"
)

// AuditFinding is something wrong in an account's audit chain.
type AuditFinding struct {
	AccountID string
	Seq       int64 // the first entry that breaks; 0 for the chain as a whole
	Problem   string
}

func (f AuditFinding) String() string {
	if f.Seq == 0 {
		return fmt.Sprintf("account %s: %s", f.AccountID, f.Problem)
	}
	return fmt.Sprintf("account %s, entry %d: %s", f.AccountID, f.Seq, f.Problem)
}

// HeadClaim is a head kept somewhere else, to check the chain against: an account's entry seq
// had this hash. Without an account it is any account's.
type HeadClaim struct {
	AccountID string
	Head      devreg.AuditHead
}

// VerifyAudit checks every account's audit chain, for the server's command line: each entry's
// hash follows from the one before and from the entry, the sequence has no gaps, the filtered
// columns agree with the entry, and the stored head is the last entry. It names the first entry
// that breaks each chain. Whoever can write the database could recompute a whole chain, or cut
// its end and the head with it; heads kept elsewhere (claims) catch that: each must still be in
// the chain, unchanged. Run it on a store that reads one snapshot (store.DB.ReadSnapshot) while
// servers write: otherwise an entry appended between reading the heads and the chains looks
// like one added past the head.
func (s *Service) VerifyAudit(ctx context.Context, claims []HeadClaim) ([]AuditFinding, error) {
	heads, err := s.store.AuditAccounts(ctx)
	if err != nil {
		return nil, err
	}
	accounts := make([]string, 0, len(heads))
	for id := range heads {
		accounts = append(accounts, id)
	}
	sort.Strings(accounts)
	var findings []AuditFinding
	found := make([]bool, len(claims))
	for _, acc := range accounts {
		hashes := map[int64]string{} // of the claimed entries
		for _, c := range claims {
			if c.AccountID == "" || c.AccountID == acc {
				hashes[c.Head.Seq] = ""
			}
		}
		head := heads[acc]
		f, last, err := s.verifyChain(ctx, acc, hashes)
		if err != nil {
			return nil, err
		}
		if f != nil {
			findings = append(findings, *f)
		} else if head != last {
			findings = append(findings, AuditFinding{AccountID: acc, Problem: fmt.Sprintf(
				"the stored head is entry %d (%.12s…) but the chain ends at entry %d (%.12s…): entries were removed or added past the head", head.Seq, head.Hash, last.Seq, last.Hash)})
		}
		for i, c := range claims {
			if (c.AccountID == "" || c.AccountID == acc) && hashes[c.Head.Seq] == c.Head.Hash {
				found[i] = true
			}
		}
	}
	for i, c := range claims {
		if !found[i] {
			who := "no account's chain"
			if c.AccountID != "" {
				who = "the chain of account " + c.AccountID
			}
			findings = append(findings, AuditFinding{AccountID: c.AccountID, Seq: c.Head.Seq, Problem: fmt.Sprintf(
				"%s holds entry %d with hash %s, the head kept elsewhere: the chain was cut short or recomputed", who, c.Head.Seq, c.Head.Hash)})
		}
	}
	return findings, nil
}

// verifyChain walks one account's chain and returns its first break, if any, and its last entry;
// it records the hashes of the entries named in claimed.
func (s *Service) verifyChain(ctx context.Context, accountID string, claimed map[int64]string) (*AuditFinding, devreg.AuditHead, error) {
	last := devreg.AuditHead{Hash: devreg.GenesisHash}
	var finding *AuditFinding
	broken := func(seq int64, format string, args ...any) error {
		finding = &AuditFinding{AccountID: accountID, Seq: seq, Problem: fmt.Sprintf(format, args...)}
		return errStop
	}
	err := s.store.WalkAudit(ctx, accountID, nil, nil, func(e devreg.StoredAuditEntry) error {
		if e.Seq != last.Seq+1 {
			if e.Seq > last.Seq+1 {
				return broken(last.Seq+1, "missing: the chain goes on with entry %d (removed entries)", e.Seq)
			}
			return broken(e.Seq, "out of order after entry %d", last.Seq)
		}
		var entry devreg.AuditEntry
		if err := json.Unmarshal(e.Entry, &entry); err != nil {
			return broken(e.Seq, "not a JSON entry: %v", err)
		}
		canonical, err := entry.Canonical()
		if err != nil || !bytes.Equal(canonical, e.Entry) {
			return broken(e.Seq, "changed: the stored entry is not what its fields make (edited, or fields added)")
		}
		if want := devreg.ChainHash(last.Hash, e.Entry); e.Hash != want {
			return broken(e.Seq, "changed or inserted: its hash does not follow from the entry and the one before")
		}
		if entry.AccountID != accountID {
			return broken(e.Seq, "belongs to the chain of account %q, not this one (a chain copied under another account)", entry.AccountID)
		}
		if entry.Seq != e.Seq || !entry.Time.Equal(e.Time) || entry.Action != e.Action || entry.Actor.Type != e.Actor.Type ||
			entry.Actor.ID != e.Actor.ID || entry.Object != e.Object {
			return broken(e.Seq, "changed: the columns the listing filters on do not match the entry")
		}
		if _, ok := claimed[e.Seq]; ok {
			claimed[e.Seq] = e.Hash
		}
		last = devreg.AuditHead{Seq: e.Seq, Hash: e.Hash}
		return nil
	})
	if err == errStop {
		err = nil
	}
	return finding, last, err
}
