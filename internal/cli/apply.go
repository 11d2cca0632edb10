package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/state"
)

func newApplyCmd(g *globals) *cobra.Command {
	var t txnFlags
	c := &cobra.Command{
		Use:   "apply FILE",
		Short: "Plan, confirm, apply in order, verify, and roll back on failure",
		Long: `Make the host match a state document.

apply queries the plugins the document names, prints the plan, asks for
confirmation (when stdin is a terminal; --yes skips the question, and without
a terminal --yes is required), takes a snapshot, journals the transaction,
applies the ops in dependency order with a progress line per op, then queries
again to verify. If an op fails or the verification finds a mismatch, every
item the transaction touched is restored to its state before apply, and the
restore is verified too.

With --confirm-within, a verified apply then waits for ` + "`op-dbus commit`" + ` (from
another shell); if it does not come in time, everything the transaction
changed is rolled back. A transient systemd timer keeps that deadline too
(running "op-dbus recover --if-deadline-passed"), so it holds even if this
process dies; where no systemd answers, --confirm-within is refused unless
the global --confirm-in-process lets this process alone keep it. If op-dbus
is killed at any point, the next run finds the journal and rolls the
transaction back.

Exit codes: 0 applied and verified (or nothing to do), 1 failed (the message
says what failed, what was undone, and anything that could not be undone).`,
		Example: `  op-dbus apply host.json
  op-dbus apply --dry-run host.json
  op-dbus apply --confirm-within 60s host.json   # then, from another shell: op-dbus commit
  op-dbus apply --yes -o json host.json`,
		Args: exactFile,
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := g.openDoc(args[0])
			if err != nil {
				return err
			}
			defer r.close()
			return runTransaction(g, r.svc, r.doc, "apply", t)
		},
	}
	t.register(c)
	return c
}

// txnFlags are the flags of every command that changes the host.
type txnFlags struct {
	dryRun, yes   bool
	confirmWithin time.Duration
}

func (t *txnFlags) register(c *cobra.Command) {
	c.Flags().BoolVar(&t.dryRun, "dry-run", false, "print the plan and change nothing")
	c.Flags().BoolVarP(&t.yes, "yes", "y", false, "apply without asking for confirmation")
	c.Flags().DurationVar(&t.confirmWithin, "confirm-within", 0, "after a verified apply, roll everything back unless op-dbus commit comes within this long")
}

// runTransaction is apply, rollback and snapshot restore: plan, show,
// confirm, then a journaled transaction with progress and verification,
// all through the one transaction service.
func runTransaction(g *globals, svc *control.Service, doc *state.Document, kind string, t txnFlags) error {
	f, err := g.format("text")
	if err != nil {
		return err
	}
	if !t.dryRun && !t.yes && !g.stdinTerminal {
		return &exitError{ExitError, fmt.Errorf("%s: stdin is not a terminal, so op-dbus cannot ask for confirmation; pass --yes to apply without asking (or --dry-run to only see the plan)", kind)}
	}
	ctx, cancel := g.context()
	defer cancel()
	text := f == "text"
	if t.dryRun {
		plan, err := svc.Engine().Plan(ctx, doc)
		if err != nil {
			return &exitError{ExitError, err}
		}
		if !text {
			return writeData(g.stdout, f, applyOut{Plan: planJSON(doc, plan), DryRun: true, Success: true})
		}
		printPlan(g, plan)
		if !plan.Empty() {
			fmt.Fprintln(g.stdout, "\nDry run: nothing was changed.")
		}
		return nil
	}
	pal := g.colors()
	start := time.Now()
	req := control.Request{Kind: kind, Doc: doc, ConfirmWithin: t.confirmWithin,
		Approve: func(plan *engine.Plan) error {
			if text {
				printPlan(g, plan)
			}
			if !t.yes && !confirm(g, fmt.Sprintf("\nApply %d %s?", len(plan.Ops), plural(len(plan.Ops), "change", "changes"))) {
				return fmt.Errorf("%s cancelled; nothing was changed", kind)
			}
			start = time.Now()
			if text {
				fmt.Fprintln(g.stdout)
			}
			return nil
		},
		OnWait: func(deadline time.Time) {
			if text {
				fmt.Fprintf(g.stdout, "%s\n", pal.bold(fmt.Sprintf("Waiting for confirmation until %s: run `op-dbus commit` within %s, or every change is rolled back.",
					deadline.Local().Format("15:04:05"), t.confirmWithin)))
			}
		}}
	if text {
		req.Events = progressPrinter(g)
	}
	out, err := svc.Transact(ctx, req)
	if out == nil || out.Plan == nil {
		return &exitError{ExitError, err}
	}
	plan := out.Plan
	if out.Txn == nil { // nothing to do, or refused before any change
		if err == nil && text {
			printPlan(g, plan)
		}
		if err == nil && !text {
			err = writeData(g.stdout, f, applyOut{Plan: planJSON(doc, plan), Success: true})
		}
		if err != nil {
			return &exitError{ExitError, err}
		}
		return nil
	}
	tx := out.Txn
	res := tx.Result
	if !text {
		if werr := writeData(g.stdout, f, applyOut{Plan: planJSON(doc, plan), Result: res, Snapshot: tx.Snapshot,
			Unconfirmed: tx.Unconfirmed, Success: tx.Err() == nil && err == nil, Error: errString(tx.Err())}); werr != nil {
			return werr
		}
		if tx.Err() != nil || err != nil {
			return &exitError{ExitError, firstErr(err, tx.Err())}
		}
		return nil
	}
	switch {
	case tx.Unconfirmed != nil:
		rb := tx.Unconfirmed
		if rb.Verify.OK {
			fmt.Fprintf(g.stdout, "%s\n", pal.red("No confirmation came in time: every change was rolled back, and that is verified."))
		} else {
			fmt.Fprintf(g.stdout, "%s\n", pal.red("No confirmation came in time; the rollback is INCOMPLETE:"))
			for _, mm := range rb.NotUndone {
				fmt.Fprintf(g.stdout, "  could not undo: %s.%s desired %s, current %s\n", mm.Plugin, mm.Path, show(mm.Desired), show(mm.Current))
			}
		}
		return &exitError{ExitError, tx.Err()}
	case res.Success && t.confirmWithin > 0:
		fmt.Fprintln(g.stdout, pal.green(fmt.Sprintf("Confirmed. Applied %d %s.", len(plan.Ops), plural(len(plan.Ops), "change", "changes"))))
	default:
		if perr := printResult(g, res, time.Since(start)); perr != nil {
			return perr
		}
	}
	if tx.Snapshot != "" {
		fmt.Fprintf(g.stdout, "%s\n", pal.dim("Snapshot before this change: "+tx.Snapshot+" (undo with `op-dbus rollback`)"))
	}
	if err != nil {
		return &exitError{ExitError, err}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

type applyOut struct {
	Plan        planOut                `json:"plan"`
	DryRun      bool                   `json:"dry_run,omitempty"`
	Result      *engine.Result         `json:"result,omitempty"`
	Snapshot    string                 `json:"snapshot,omitempty"`
	Unconfirmed *engine.RollbackResult `json:"unconfirmed_rollback,omitempty"`
	Success     bool                   `json:"success"`
	Error       string                 `json:"error,omitempty"`
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// progressPrinter prints one line per finished op. Ops run concurrently,
// so a line is printed when an op ends, numbered in completion order.
func progressPrinter(g *globals) func(engine.Event) {
	pal := g.colors()
	n := map[string]int{}
	return func(ev engine.Event) {
		if !ev.Done {
			return
		}
		if ev.Phase == "verify" {
			printVerification(g, ev.Verify)
			return
		}
		n[ev.Phase]++
		label := "apply"
		if ev.Phase == "rollback" {
			label = "undo "
		}
		count := fmt.Sprintf("[%s %d/%d]", label, n[ev.Phase], ev.Total)
		dur := pal.dim(fmt.Sprintf("(%s)", roundDur(ev.Duration)))
		if ev.Err != nil {
			fmt.Fprintf(g.stdout, "%s %s %s %s\n      %s\n", pal.dim(count), pal.red("✗"), ev.Op.Description, dur, pal.red(ev.Err.Error()))
			return
		}
		fmt.Fprintf(g.stdout, "%s %s %s %s\n", pal.dim(count), pal.green("✓"), ev.Op.Description, dur)
	}
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(10 * time.Millisecond)
	case d > time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// printVerification prints the verification of the apply phase as soon as
// it is known: before any rollback line, so the reader sees why the undo
// follows.
func printVerification(g *globals, v *engine.Verification) {
	pal := g.colors()
	switch {
	case v == nil:
	case v.OK:
		fmt.Fprintf(g.stdout, "\nVerifying... %s\n", pal.green("ok: the host matches the document"))
	case v.Error == "" && len(v.Mismatches) > 0:
		fmt.Fprintf(g.stdout, "\nVerifying... %s\n", pal.red("FAILED"))
		for _, m := range v.Mismatches {
			fmt.Fprintf(g.stdout, "  %s.%s desired %s, current %s\n", m.Plugin, m.Path, show(m.Desired), show(m.Current))
		}
	}
}

func printResult(g *globals, res *engine.Result, took time.Duration) error {
	pal := g.colors()
	w := g.stdout
	applied := 0
	for _, o := range res.Outcomes {
		if o.Status == engine.Applied {
			applied++
		}
	}
	if res.Success {
		fmt.Fprintf(w, "%s\n", pal.green(fmt.Sprintf("Applied %d %s in %s.", applied, plural(applied, "change", "changes"), roundDur(took))))
		return nil
	}
	skipped := 0
	for _, o := range res.Outcomes {
		if o.Status == engine.Skipped {
			skipped++
		}
	}
	if skipped > 0 {
		fmt.Fprintf(w, "%d %s not run because of the failure.\n", skipped, plural(skipped, "op was", "ops were"))
	}
	msg := res.Err.Error()
	rb := res.Rollback
	switch {
	case rb == nil:
	case len(rb.Items) == 0:
		msg += "; nothing had been changed, so nothing was rolled back"
	case rb.Verify.OK:
		fmt.Fprintf(w, "\n%s\n", pal.bold(fmt.Sprintf("Rolled back %d %s: %s", len(rb.Items), plural(len(rb.Items), "item", "items"), strings.Join(rb.Items, ", "))))
		fmt.Fprintf(w, "Verifying rollback... %s\n", pal.green("ok: those items are back to their state before apply"))
		msg += "; rolled back and verified: " + strings.Join(rb.Items, ", ")
	default:
		fmt.Fprintf(w, "\n%s\n", pal.red("Rollback incomplete."))
		var not []string
		for _, m := range rb.NotUndone {
			line := fmt.Sprintf("%s.%s desired %s, current %s", m.Plugin, m.Path, show(m.Desired), show(m.Current))
			fmt.Fprintf(w, "  could not undo: %s\n", line)
			not = append(not, line)
		}
		if rb.Verify.Error != "" {
			fmt.Fprintf(w, "  %s\n", rb.Verify.Error)
			not = append(not, rb.Verify.Error)
		}
		msg += "; rollback incomplete, NOT undone: " + strings.Join(not, "; ")
	}
	return &exitError{ExitError, errors.New("apply failed: " + msg)}
}
