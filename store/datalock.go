//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFileName is the file in the data directory whose lock says who uses the embedded database:
// every process that opens it holds a shared lock for as long as it has it open, and a restore
// holds an exclusive one, so that a restore cannot replace the database under anyone, nor anyone
// open it halfway through a restore. The file is never removed: a process that locked a removed
// file would not exclude one that locked its successor.
const LockFileName = "devreg.lock"

// ErrDataDirInUse is the refusal of an exclusive lock while anything else holds the lock, and of a
// shared one during a restore.
var ErrDataDirInUse = errors.New("the data directory is in use")

// DirLock is a held lock on a data directory's LockFileName. The kernel gives it up when the
// process ends, however it ends.
type DirLock struct {
	f *os.File
}

// LockDataDir takes the lock of the data directory dir, shared or exclusive, without waiting: it
// fails with an error wrapping ErrDataDirInUse when the other kind is held.
func LockDataDir(dir string, exclusive bool) (*DirLock, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the data directory's lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err == nil {
		return &DirLock{f: f}, nil
	}
	f.Close()
	if err != syscall.EWOULDBLOCK {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if exclusive {
		return nil, fmt.Errorf("%w: a devreg process (a server, or a command such as backup or check) holds %s; "+
			"stop every devreg process that uses %s and try again", ErrDataDirInUse, path, dir)
	}
	return nil, fmt.Errorf("%w: devreg restore holds %s while it puts a backup in place; try again when it is done",
		ErrDataDirInUse, path)
}

// Release gives the lock up. Releasing it again, or a nil lock, does nothing.
func (l *DirLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor of the file releases the lock
	l.f = nil
	return err
}
