//go:build !(linux || darwin || freebsd)

package store

import (
	"errors"
	"os"
)

// freeSpace returns how many bytes this user may still write in the file system that holds dir;
// devreg reads it only on Linux, macOS and FreeBSD.
func freeSpace(dir string) (int64, error) {
	return -1, errors.ErrUnsupported
}

// allocated returns the bytes a file takes on disk, here taken to be its size.
func allocated(fi os.FileInfo) int64 { return fi.Size() }
