package control

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/journallog"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/snapshot"
)

// Refuse records a refused request in the audit log, best effort: the
// refusal itself is what the caller sees. Every front end records its
// refusals here, so they all have one shape.
func (s *Service) Refuse(kind, client, message string) {
	if kind == "" {
		kind = "apply"
	}
	s.Note(ledger.Entry{Kind: kind, Actor: ledger.LocalActor(client), Result: "refused", Message: message})
}

// Note appends an entry that is not a transaction (drift seen by the
// daemon, a refusal), stamped with the time and this view's source, best
// effort: a failure is logged.
func (s *Service) Note(e ledger.Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Source == "" {
		e.Source = s.source
	}
	if e.Actor == (ledger.Actor{}) {
		e.Actor = ledger.LocalActor("")
	}
	l, err := s.openLog()
	if err != nil {
		s.logAt(journallog.Err, nil, "audit log: %v", err)
		return
	}
	defer l.Close()
	if _, err := l.Append(e); err != nil {
		s.logAt(journallog.Err, nil, "audit log: %v", err)
	}
}

// readLog opens an existing audit log; ok is false when there is none yet.
func (s *Service) readLog() (*ledger.Log, bool, error) {
	if !ledger.Exists(s.dir.Audit()) {
		return nil, false, nil
	}
	l, err := ledger.Open(s.dir.Audit())
	if err != nil {
		return nil, false, errkind.New(errkind.Damaged, err)
	}
	return l, true, nil
}

// AuditLog lists audit entries at or after since, touching plugin if set.
func (s *Service) AuditLog(since time.Time, pluginName string) ([]ledger.Entry, error) {
	return s.entries(func(e ledger.Entry) bool {
		return !e.Time.Before(since) && (pluginName == "" || slices.Contains(e.Plugins, pluginName))
	})
}

// History lists the changes (not refusals), touching plugin if set.
func (s *Service) History(pluginName string) ([]ledger.Entry, error) {
	return s.entries(func(e ledger.Entry) bool {
		return e.Result != "refused" && (pluginName == "" || slices.Contains(e.Plugins, pluginName))
	})
}

func (s *Service) entries(keep func(ledger.Entry) bool) ([]ledger.Entry, error) {
	l, ok, err := s.readLog()
	if err != nil || !ok {
		return []ledger.Entry{}, err
	}
	defer l.Close()
	es, err := l.Entries(0, keep)
	if es == nil {
		es = []ledger.Entry{}
	}
	return es, err
}

// AuditVerify checks the whole log.
func (s *Service) AuditVerify() (ledger.VerifyReport, error) {
	l, ok, err := s.readLog()
	if err != nil {
		return ledger.VerifyReport{}, err
	}
	if !ok {
		return ledger.VerifyReport{}, errkind.New(errkind.NotFound, fmt.Errorf("no audit log in %s yet", s.dir.Audit()))
	}
	defer l.Close()
	return l.Verify()
}

// VerifyAuditLog re-reads and re-hashes the whole audit log (what the
// daemon does at start and on a schedule): damage that left the files'
// sizes and times alone (bit rot, a careful edit) is found, recorded in the
// log's marker, and every later apply of any process refuses to append.
// It returns nil when there is no log yet or the log is clean.
func (s *Service) VerifyAuditLog() error {
	l, ok, err := s.readLog()
	if err != nil || !ok {
		return err
	}
	defer l.Close()
	_, err = l.VerifyAll()
	if err == nil {
		err = l.Corrupt()
	}
	if err != nil {
		return errkind.New(errkind.Damaged, fmt.Errorf("audit log %s: %w", s.dir.Audit(), err))
	}
	return nil
}

// AuditSize is the number of entries (0, false when there is no log).
func (s *Service) AuditSize() (uint64, bool) {
	l, ok, err := s.readLog()
	if err != nil || !ok {
		return 0, false
	}
	defer l.Close()
	return l.Size(), true
}

// AuditEntry returns entry n.
func (s *Service) AuditEntry(n uint64) (ledger.Entry, error) {
	l, err := s.mustReadLog(n)
	if err != nil {
		return ledger.Entry{}, err
	}
	defer l.Close()
	e, err := l.Get(n)
	return e, auditErr(n, err)
}

// AuditProof returns a receipt for entry n and the log's public key.
func (s *Service) AuditProof(n uint64) (ledger.Receipt, string, error) {
	l, err := s.mustReadLog(n)
	if err != nil {
		return ledger.Receipt{}, "", err
	}
	defer l.Close()
	rc, err := l.InclusionProof(n)
	return rc, l.PublicKey(), auditErr(n, err)
}

func (s *Service) mustReadLog(n uint64) (*ledger.Log, error) {
	l, ok, err := s.readLog()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errkind.New(errkind.NotFound, fmt.Errorf("audit entry %d: the audit log is empty", n))
	}
	return l, nil
}

func auditErr(n uint64, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ledger.ErrNotFound):
		return errkind.New(errkind.NotFound, err)
	}
	return fmt.Errorf("audit entry %d: %w", n, err)
}

// Snapshots lists the stored snapshots, oldest first.
func (s *Service) Snapshots() ([]snapshot.Snapshot, error) {
	if _, err := os.Stat(s.dir.Snapshots()); err != nil {
		return []snapshot.Snapshot{}, nil
	}
	st, err := snapshot.Open(s.dir.Snapshots())
	if err != nil {
		return nil, err
	}
	l, err := st.List()
	if l == nil {
		l = []snapshot.Snapshot{}
	}
	return l, err
}
