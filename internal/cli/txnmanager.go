package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// txnManager is a txn.Manager with the resources the CLI opened for it.
type txnManager struct {
	*txn.Manager
	closers []func() error
}

func (m *txnManager) Close() {
	for _, c := range m.closers {
		_ = c()
	}
}

func newTxnManager(g *globals, e *engine.Engine) (*txnManager, error) {
	snaps, err := snapshot.Open(filepath.Join(g.stateDir, "snapshots"))
	if err != nil {
		return nil, err
	}
	log, err := ledger.Open(g.auditDir())
	if err != nil {
		return nil, fmt.Errorf("audit log: %w (op-dbus changes nothing it cannot record)", err)
	}
	if err := log.Corrupt(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%w; op-dbus changes nothing it cannot record: run `op-dbus audit verify`", err)
	}
	for _, r := range log.Repairs() {
		fmt.Fprintf(g.stderr, "op-dbus: audit log repaired after a crash: %s\n", r)
	}
	m := &txnManager{Manager: &txn.Manager{Dir: g.stateDir, Engine: e, Snapshots: snaps,
		Recorder: &txn.LedgerRecorder{Log: log, Source: "cli"}, Keep: g.snapshotKeep, MaxAge: g.snapshotMaxAge,
		Log: func(format string, args ...any) { fmt.Fprintf(g.stderr, "op-dbus: "+format+"\n", args...) }}}
	m.closers = append(m.closers, log.Close)
	return m, nil
}

// recoverInterrupted finishes what a killed transaction left: if a journal
// exists and no live op-dbus holds the lock, the transaction is rolled
// back, verified and audited before this command goes on. Commands that
// read or change host state call it, so the first one after a crash finds
// the host as it was before the interrupted apply.
func (g *globals) recoverInterrupted() error {
	if _, err := os.Stat(filepath.Join(g.stateDir, "journal.json")); err != nil {
		return nil
	}
	unlock, err := txn.Lock(g.stateDir)
	if err != nil {
		return nil // a live transaction owns the journal
	}
	defer unlock()
	e, done := g.engine()
	defer done()
	m, err := g.manager(e)
	if err != nil {
		return &exitError{ExitError, err}
	}
	defer m.Close()
	ctx, cancel := g.context()
	defer cancel()
	rb, err := m.Recover(ctx)
	if err != nil {
		return &exitError{ExitError, err}
	}
	if rb != nil {
		fmt.Fprintf(g.stderr, "op-dbus: the interrupted transaction was rolled back and verified (%d %s); continuing\n",
			len(rb.Outcomes), plural(len(rb.Outcomes), "op", "ops"))
	}
	return nil
}

// withManager runs fn with the engine and the state directory's transaction
// manager (snapshots, audit log) open.
func (g *globals) withManager(fn func(e *engine.Engine, m *txnManager) error) error {
	e, done := g.engine()
	defer done()
	m, err := g.manager(e)
	if err != nil {
		return &exitError{ExitError, err}
	}
	defer m.Close()
	return fn(e, m)
}
