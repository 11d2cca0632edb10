// Package statedir names every file and folder op-dbus keeps in its state
// directory (by default /var/lib/op-dbus) and creates them with the right
// permissions. Nobody else joins path strings for the state directory: a
// new file is added here, with a comment saying who writes it.
package statedir

import (
	"fmt"
	"os"
	"path/filepath"
)

// Dir is a state directory.
type Dir struct{ path string }

// New returns the state directory at path (not created yet).
func New(path string) Dir { return Dir{path: path} }

// Path is the directory itself.
func (d Dir) Path() string { return d.path }

func (d Dir) String() string { return d.path }

// Ensure creates the directory, readable by root only: it holds the audit
// log's signing key and the pre-apply states of every transaction.
func (d Dir) Ensure() error {
	if err := os.MkdirAll(d.path, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w (use --state-dir to pick another)", d.path, err)
	}
	return nil
}

// LockFile is flock(2)ed by the transaction that runs; it holds its pid.
func (d Dir) LockFile() string { return filepath.Join(d.path, "lock") }

// Journal exists only while a transaction runs or waits for confirmation:
// finding one means a transaction did not end (internal/txn).
func (d Dir) Journal() string { return filepath.Join(d.path, "journal.json") }

// CommitMark is written by `op-dbus commit` for the waiting transaction.
func (d Dir) CommitMark() string { return filepath.Join(d.path, "journal.commit") }

// LastTransaction is what `op-dbus rollback` undoes.
func (d Dir) LastTransaction() string { return filepath.Join(d.path, "last-transaction.json") }

// Audit is the audit log's folder (internal/ledger owns what is inside).
func (d Dir) Audit() string { return filepath.Join(d.path, "audit") }

// Snapshots is the snapshot store's folder (internal/snapshot).
func (d Dir) Snapshots() string { return filepath.Join(d.path, "snapshots") }

// Search is the search index's folder (internal/search).
func (d Dir) Search() string { return filepath.Join(d.path, "search") }
