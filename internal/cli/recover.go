package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// recoverReport is what `op-dbus recover` did, for people and for -o json.
type recoverReport struct {
	// Action is none, rolled-back or failed.
	Action string `json:"action"`
	// Reason is no-journal, owner-alive, owner-overdue, not-awaiting-confirm,
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
failed, 75 when --if-deadline-passed finds the deadline passed but the
transaction's process still holding the lock (the timer's service then runs
it again a few seconds later, until that process has acted or is gone).`,
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
			if rep.Reason == "owner-overdue" {
				// The confirm timer's service restarts on failure: try
				// again until the owner has acted or is gone.
				return exitCode(ExitTempFail)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&ifDeadline, "if-deadline-passed", false, "act only on a transaction awaiting confirmation whose deadline has passed")
	return c
}

func (g *globals) recoverTransaction(ifDeadline bool) (*recoverReport, error) {
	svc, done := g.service()
	defer done()
	ctx, cancel := g.context()
	defer cancel()
	r, err := svc.Recover(ctx, ifDeadline)
	rep := &recoverReport{Action: r.Action, Reason: r.Reason, Rollback: r.Rollback}
	j := r.Journal
	if j != nil {
		rep.Transaction, rep.Phase = j.ID, j.Phase
		if !j.Deadline.IsZero() {
			d := j.Deadline
			rep.Deadline = &d
		}
	}
	switch r.Reason {
	case "no-journal":
		rep.Message = fmt.Sprintf("Nothing to recover: no unfinished transaction in %s.", g.stateDir)
	case "owner-alive":
		rep.Message = fmt.Sprintf("Nothing to do: %v; that process is alive and handles its own transaction and deadline.", r.Owner)
		if ifDeadline && j != nil && j.Phase == txn.PhaseAwaitingConfirm && !time.Now().Before(j.Deadline) {
			// Past the deadline and still holding the lock: the owner is
			// rolling back, or hung. Ask to be run again (exit 75) rather
			// than let the deadline go by if it then dies.
			rep.Reason = "owner-overdue"
			rep.Message = fmt.Sprintf("Not yet: %v past the deadline %s of transaction %s; trying again shortly (exit 75).", r.Owner, j.Deadline.Local().Format(time.RFC3339), j.ID)
		}
	case "not-awaiting-confirm":
		rep.Message = fmt.Sprintf("Nothing to do: transaction %s is %s, not waiting for confirmation (`op-dbus recover` without --if-deadline-passed rolls it back).", j.ID, j.Phase)
	case "deadline-not-passed":
		rep.Message = fmt.Sprintf("Nothing to do yet: transaction %s waits for confirmation until %s (%s left).",
			j.ID, j.Deadline.Local().Format(time.RFC3339), time.Until(j.Deadline).Round(time.Second))
	}
	if rep.Message != "" && err == nil {
		return rep, nil
	}
	why := "its process is gone"
	if r.Reason == "deadline-passed" {
		why = "not confirmed by " + j.Deadline.Local().Format(time.RFC3339)
	}
	id := ""
	if j != nil {
		id = j.ID
	}
	if err != nil {
		rep.Action, rep.Message = "failed", fmt.Sprintf("Rolling back transaction %s (%s) failed: %v", id, why, err)
		return rep, err
	}
	n := 0
	if rep.Rollback != nil {
		n = len(rep.Rollback.Outcomes)
	}
	rep.Message = fmt.Sprintf("Rolled back transaction %s (%s): %d %s, verified.", id, why, n, plural(n, "op", "ops"))
	return rep, nil
}
