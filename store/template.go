package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// templateOn is UseMigratedTemplate's switch.
var templateOn atomic.Bool

// UseMigratedTemplate makes every later Open of a new SQLite database in this process (a file
// that is not there yet) start from a copy of one database migrated once, rather than run every
// migration on it; Open then finds nothing to migrate. It is for tests, which open hundreds of new
// databases: SQLite parses the whole schema again after each migration's DDL, about a quarter of
// a second of CPU a database under the race detector. The copy is what the migrations make.
func UseMigratedTemplate() { templateOn.Store(true) }

// templateImage is the file of an SQLite database that the migrations have made, made once.
var templateImage = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "devreg-template-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "devreg.db")
	s, err := openImage(context.Background(), "sqlite:"+file, false, nil)
	if err != nil {
		return nil, err
	}
	// Everything in the file itself, none of it in the write-ahead log.
	_, err = s.h.ExecContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("make the migrated template: %w", err)
	}
	return os.ReadFile(file)
})
