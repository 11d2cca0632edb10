package statedir

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/op-dbus/op-dbus/internal/errkind"
)

// Lock takes the state directory's exclusive lock so two transactions never
// interleave; a second one is refused (errkind.Locked) with the holder's
// pid. The kernel releases the lock if the holder dies, which is how a
// crashed apply is told from a running one.
//
// The pid protocol: the holder writes its pid right after flock succeeds
// and empties the file before it lets go, so the file is empty only in
// those two short windows. A refused caller that reads an empty file tries
// the lock again (the holder may be gone) and re-reads, so it never reports
// a lock without a pid.
func (d Dir) Lock() (unlock func(), err error) {
	if err := d.Ensure(); err != nil {
		return nil, err
	}
	path := d.LockFile()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for attempt := 0; ; attempt++ {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			break
		}
		if pid, ok := readPID(path); ok || attempt >= 400 {
			f.Close()
			holder := "pid " + strconv.Itoa(pid)
			if !ok {
				holder = "its pid not written after 2 s"
			}
			return nil, errkind.New(errkind.Locked, fmt.Errorf("another op-dbus transaction holds %s (%s); wait for it to finish", path, holder))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		return nil, fmt.Errorf("lock %s: write pid: %w", path, err)
	}
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func readPID(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}
