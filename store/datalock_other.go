//go:build !unix

package store

import "errors"

// LockFileName is the file in the data directory whose lock says who uses the embedded database.
const LockFileName = "devreg.lock"

// ErrDataDirInUse is the refusal of an exclusive lock while anything else holds the lock.
var ErrDataDirInUse = errors.New("the data directory is in use")

// DirLock is a held lock on a data directory. This system has no flock: shared locks are not
// taken, and an exclusive one is refused, so that a restore never runs unprotected.
type DirLock struct{}

// LockDataDir takes nothing shared, and refuses an exclusive lock on this system.
func LockDataDir(dir string, exclusive bool) (*DirLock, error) {
	if exclusive {
		return nil, errors.New("devreg restore needs file locks (flock), which devreg uses only on Unix systems")
	}
	return &DirLock{}, nil
}

// Release does nothing.
func (l *DirLock) Release() error { return nil }
