// Package txn makes an apply a transaction that survives crashes: it holds
// the state directory's lock, takes a snapshot, journals the pre-apply state
// of every planned item before the first op, applies through the engine,
// optionally waits for a confirmation, and on failure, timeout or a crash
// (found by the next invocation) restores that state, verifies it, and
// records everything in the audit log.
package txn

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/op-dbus/op-dbus/internal/atomicfile"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

// Phase of a journaled transaction.
const (
	PhaseApplying        = "applying"
	PhaseAwaitingConfirm = "awaiting-confirm"
)

// Journal is written before the first op and removed when the transaction
// ends; finding one means a transaction did not end.
type Journal struct {
	Version  int       `json:"version"`
	ID       string    `json:"id"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
	Phase    string    `json:"phase"`
	Deadline time.Time `json:"deadline,omitempty"`
	Document string    `json:"document_hash"`
	Snapshot string    `json:"snapshot,omitempty"`
	// PreState is, per plugin, the pre-apply state of every item the plan
	// touches: applying it undoes the transaction.
	PreState map[string]json.RawMessage `json:"pre_state"`
	Items    map[string][]string        `json:"items"`
	Ops      int                        `json:"ops"`
	// Source is the front end that started the transaction (cli, daemon,
	// api, mcp) and Client who asked through it, as in the audit log.
	Source string `json:"source,omitempty"`
	Client string `json:"client,omitempty"`
}

// startedBy names the front end and actor that started the transaction,
// "" when the journal does not say.
func (j *Journal) startedBy() string {
	return strings.TrimSpace(j.Source + " " + j.Client)
}

func journalPath(dir string) string { return statedir.New(dir).Journal() }
func commitPath(dir string) string  { return statedir.New(dir).CommitMark() }

// ErrCorruptJournal means a journal exists but cannot be read; nothing is
// applied until a person looks at it.
var ErrCorruptJournal = errors.New("corrupt journal")

// ReadJournal returns the journal, nil if there is none.
func ReadJournal(dir string) (*Journal, error) {
	b, err := os.ReadFile(journalPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j Journal
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil || j.Version != 1 || j.ID == "" || j.PreState == nil {
		why := "missing fields"
		if err != nil {
			why = err.Error()
		}
		return nil, errkind.New(errkind.Damaged, fmt.Errorf("%w at %s (%s): the interrupted transaction cannot be undone automatically; check the host with `op-dbus verify`, then move the file away to continue", ErrCorruptJournal, journalPath(dir), why))
	}
	return &j, nil
}

func writeJournal(dir string, j *Journal) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return writeSynced(journalPath(dir), b)
}

func writeSynced(path string, b []byte) error { return atomicfile.Write(path, b, 0o600) }

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

func removeJournal(dir string) error {
	_ = os.Remove(commitPath(dir))
	if err := os.Remove(journalPath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(dir)
}

// Commit confirms the transaction that waits for confirmation (apply
// --confirm-within) in another process, and waits until it has ended.
func Commit(dir string, wait time.Duration) error {
	j, err := ReadJournal(dir)
	if err != nil {
		return err
	}
	if j == nil {
		return fmt.Errorf("nothing to commit: no apply is waiting for confirmation in %s", dir)
	}
	if j.Phase != PhaseAwaitingConfirm {
		return fmt.Errorf("nothing to commit: the transaction in %s is still %s (pid %d)", dir, j.Phase, j.PID)
	}
	if !alive(j.PID) {
		return fmt.Errorf("too late: the apply waiting for confirmation (pid %d) is gone; its changes are rolled back at the deadline (%s) by the confirm timer, or by the next op-dbus run where no timer was armed", j.PID, j.Deadline.Local().Format(time.RFC3339))
	}
	if err := writeSynced(commitPath(dir), []byte(j.ID+"\n")); err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		cur, err := ReadJournal(dir)
		if err == nil && (cur == nil || cur.ID != j.ID) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("confirmation written, but the apply (pid %d) has not acknowledged it within %s", j.PID, wait)
}

func committed(dir, id string) bool {
	b, err := os.ReadFile(commitPath(dir))
	return err == nil && strings.TrimSpace(string(b)) == id
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
