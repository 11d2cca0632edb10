package cli

import (
	"fmt"
	"os"

	"github.com/op-dbus/op-dbus/internal/confirmtimer"
	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// service builds the transaction service every CLI command that reads or
// changes the host goes through, over a plugin set of its own.
func (g *globals) service() (*control.Service, func()) {
	e, done := g.engine()
	svc := control.New(g.serviceOptions(e, "cli"))
	return svc, done
}

// serviceOptions are the service's options from the global flags.
func (g *globals) serviceOptions(e *engine.Engine, source string) control.Options {
	o := control.Options{StateDir: g.stateDir, Engine: e, User: g.user, OVSDB: g.ovsdb, Source: source,
		SnapshotKeep: g.snapshotKeep, SnapshotMaxAge: g.snapshotMaxAge,
		Logger: g.logger()}
	if !g.confirmInProcess {
		o.Deadlines = g.deadlines()
	}
	return o
}

// deadlines keeps confirm deadlines with systemd (the user's manager with
// --user), running this binary's `recover --if-deadline-passed` at the
// deadline. Nil when this binary's path cannot be known.
func (g *globals) deadlines() control.Deadlines {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	argv, err := confirmtimer.RecoverArgv(exe, g.stateDir, g.user, g.ovsdb)
	if err != nil {
		return nil
	}
	return &confirmtimer.Keeper{Bus: confirmtimer.Bus(g.user), Argv: argv, Env: confirmtimer.Env()}
}

// recoverInterrupted finishes what a killed transaction left: if a journal
// exists and no live op-dbus holds the lock, the transaction is rolled
// back, verified and audited before this command goes on. Commands that
// read or change host state call it, so the first one after a crash finds
// the host as it was before the interrupted apply.
func (g *globals) recoverInterrupted() error {
	if j, err := txn.ReadJournal(g.stateDir); err == nil && j == nil {
		return nil
	}
	svc, done := g.service()
	defer done()
	ctx, cancel := g.context()
	defer cancel()
	r, err := svc.Recover(ctx, false)
	if err != nil {
		return &exitError{ExitError, err}
	}
	if rb := r.Rollback; r.Action == "rolled-back" && rb != nil {
		fmt.Fprintf(g.stderr, "op-dbus: the interrupted transaction was rolled back and verified (%d %s); continuing\n",
			len(rb.Outcomes), plural(len(rb.Outcomes), "op", "ops"))
	}
	return nil
}
