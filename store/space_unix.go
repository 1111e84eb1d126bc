//go:build linux || darwin || freebsd

package store

import (
	"os"
	"syscall"
)

// freeSpace returns how many bytes this user may still write in the file system that holds dir.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1, err
	}
	return int64(uint64(st.Bavail) * uint64(st.Bsize)), nil
}

// allocated returns the bytes a file takes on disk: less than its size when it has holes.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
