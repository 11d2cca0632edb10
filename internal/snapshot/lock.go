package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockWait bounds how long a writer waits for another one.
const lockWait = 30 * time.Second

// lock takes DIR/.lock with flock: LOCK_SH for Create, which only adds
// files (two Creates may run at once: blobs are content-addressed and
// every file is written atomically), LOCK_EX for whatever removes files
// (Prune, PruneDamaged, the temporary-file sweep), so that nothing removes
// a blob or a temporary file a Create is about to use. Readers take no
// lock: they only ever see whole files.
func (s *Store) lock(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshot store %s: %w", s.dir, err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("snapshot store %s: lock: %w", s.dir, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("snapshot store %s is busy: another op-dbus has been writing it for %s (try again)", s.dir, lockWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tryLock takes the lock exclusively if no one holds it; ok is false when
// someone does or the lock cannot be taken at all (a read-only store).
func (s *Store) tryLock() (unlock func(), ok bool) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}
