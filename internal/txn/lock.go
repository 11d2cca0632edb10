package txn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Lock takes the state directory's exclusive lock so two transactions never
// interleave; a second one is refused with the holder's pid. The lock is
// released by the kernel if the holder dies, which is how a crashed apply is
// told from a running one.
func Lock(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w (use --state-dir to pick another)", dir, err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		holder, _ := os.ReadFile(path)
		return nil, &LockedError{Path: path, Holder: strings.TrimSpace(string(holder))}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// LockedError is Lock's refusal while a live process holds the lock (the
// kernel drops a dead holder's lock).
type LockedError struct {
	Path   string
	Holder string // the holder's pid as it wrote it, "" if not yet written
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("another op-dbus transaction holds %s (pid %s); wait for it to finish", e.Path, e.Holder)
}
