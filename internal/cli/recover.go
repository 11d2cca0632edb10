package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// recoverReport is what `op-dbus recover` did, for people and for -o json.
type recoverReport struct {
	// Action is none, rolled-back or failed.
	Action string `json:"action"`
	// Reason is no-journal, owner-alive, not-awaiting-confirm,
	// deadline-not-passed, deadline-passed or interrupted.
	Reason      string                 `json:"reason"`
	Message     string                 `json:"message"`
	Transaction string                 `json:"transaction,omitempty"`
	Phase       string                 `json:"phase,omitempty"`
	Deadline    *time.Time             `json:"deadline,omitempty"`
	Rollback    *engine.RollbackResult `json:"rollback,omitempty"`
}

func newRecoverCmd(g *globals) *cobra.Command {
	var ifDeadline bool
	c := &cobra.Command{
		Use:   "recover [--if-deadline-passed]",
		Short: "Roll back a transaction that did not end (its process died)",
		Long: `Roll back the transaction journaled in the state directory if the process that
ran it is gone: restore the pre-apply state of every item it touched, verify
it, and record the recovery in the audit log. While that process lives (it
holds the state directory's lock), nothing is done.

With --if-deadline-passed, only a transaction that waits for confirmation
(apply --confirm-within) and whose deadline has passed is rolled back; this is
what the confirm timer registered with systemd runs at the deadline.

Exit code 0 when nothing had to be done or the rollback is verified, 1 when it
failed.`,
		Example: `  op-dbus recover
  op-dbus --user --state-dir ~/.local/state/op-dbus recover --if-deadline-passed -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			rep, runErr := g.recoverTransaction(ifDeadline)
			switch {
			case f != "text":
				if err := writeData(g.stdout, f, rep); err != nil {
					return err
				}
			case runErr != nil: // said once, on stderr
				return &exitError{ExitError, errors.New(rep.Message)}
			case rep.Action == "rolled-back":
				fmt.Fprintln(g.stdout, g.colors().green(rep.Message))
			default:
				fmt.Fprintln(g.stdout, rep.Message)
			}
			if runErr != nil {
				return &exitError{ExitError, runErr}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&ifDeadline, "if-deadline-passed", false, "act only on a transaction awaiting confirmation whose deadline has passed")
	return c
}

func (g *globals) recoverTransaction(ifDeadline bool) (*recoverReport, error) {
	none := func(reason, format string, args ...any) *recoverReport {
		return &recoverReport{Action: "none", Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	if _, err := os.Stat(filepath.Join(g.stateDir, "journal.json")); errors.Is(err, os.ErrNotExist) {
		return none("no-journal", "Nothing to recover: no unfinished transaction in %s.", g.stateDir), nil
	}
	unlock, err := txn.Lock(g.stateDir)
	if err != nil {
		var le *txn.LockedError
		if errors.As(err, &le) {
			return none("owner-alive", "Nothing to do: op-dbus pid %s holds %s; that process is alive and handles its own transaction and deadline.", le.Holder, le.Path), nil
		}
		return &recoverReport{Action: "failed", Reason: "lock", Message: err.Error()}, err
	}
	defer unlock()
	j, err := txn.ReadJournal(g.stateDir)
	if err != nil {
		return &recoverReport{Action: "failed", Reason: "journal", Message: err.Error()}, err
	}
	if j == nil {
		return none("no-journal", "Nothing to recover: no unfinished transaction in %s.", g.stateDir), nil
	}
	rep := &recoverReport{Transaction: j.ID, Phase: j.Phase, Reason: "interrupted"}
	if !j.Deadline.IsZero() {
		d := j.Deadline
		rep.Deadline = &d
	}
	if ifDeadline {
		if j.Phase != txn.PhaseAwaitingConfirm {
			r := none("not-awaiting-confirm", "Nothing to do: transaction %s is %s, not waiting for confirmation (`op-dbus recover` without --if-deadline-passed rolls it back).", j.ID, j.Phase)
			r.Transaction, r.Phase = j.ID, j.Phase
			return r, nil
		}
		if left := time.Until(j.Deadline); left > 0 {
			r := none("deadline-not-passed", "Nothing to do yet: transaction %s waits for confirmation until %s (%s left).",
				j.ID, j.Deadline.Local().Format(time.RFC3339), left.Round(time.Second))
			r.Transaction, r.Phase, r.Deadline = j.ID, j.Phase, rep.Deadline
			return r, nil
		}
		rep.Reason = "deadline-passed"
	}
	err = g.withManager(func(_ *engine.Engine, m *txnManager) error {
		ctx, cancel := g.context()
		defer cancel()
		rb, err := m.Recover(ctx)
		rep.Rollback = rb
		return err
	})
	why := "its process is gone"
	if rep.Reason == "deadline-passed" {
		why = "not confirmed by " + j.Deadline.Local().Format(time.RFC3339)
	}
	if err != nil {
		rep.Action, rep.Message = "failed", fmt.Sprintf("Rolling back transaction %s (%s) failed: %v", j.ID, why, err)
		return rep, err
	}
	n := 0
	if rep.Rollback != nil {
		n = len(rep.Rollback.Outcomes)
	}
	rep.Action = "rolled-back"
	rep.Message = fmt.Sprintf("Rolled back transaction %s (%s): %d %s, verified.", j.ID, why, n, plural(n, "op", "ops"))
	return rep, nil
}
