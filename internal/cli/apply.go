package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/engine"
)

func newApplyCmd(g *globals) *cobra.Command {
	var dryRun, yes bool
	c := &cobra.Command{
		Use:   "apply FILE",
		Short: "Plan, confirm, apply in order, verify, and roll back on failure",
		Long: `Make the host match a state document.

apply queries the plugins the document names, prints the plan, asks for
confirmation (when stdin is a terminal; --yes skips the question, and without
a terminal --yes is required), applies the ops in dependency order with a
progress line per op, then queries again to verify. If an op fails or the
verification finds a mismatch, every item the transaction touched is restored
to its state before apply, and the restore is verified too.

Exit codes: 0 applied and verified (or nothing to do), 1 failed (the message
says what failed, what was undone, and anything that could not be undone).`,
		Example: `  op-dbus apply host.json
  op-dbus apply --dry-run host.json
  op-dbus apply --yes -o json host.json`,
		Args: exactFile,
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := g.openDoc(args[0])
			if err != nil {
				return err
			}
			defer r.close()
			f, e, doc := r.format, r.e, r.doc
			if !dryRun && !yes && !g.stdinTerminal {
				return &exitError{ExitError, errors.New("apply: stdin is not a terminal, so op-dbus cannot ask for confirmation; pass --yes to apply without asking (or --dry-run to only see the plan)")}
			}
			var unlock func()
			if !dryRun {
				unlock, err = lockStateDir(g.stateDir)
				if err != nil {
					return &exitError{ExitError, err}
				}
				defer unlock()
			}
			ctx, cancel := g.context()
			defer cancel()
			plan, err := e.Plan(ctx, doc)
			if err != nil {
				return &exitError{ExitError, err}
			}
			text := f == "text"
			if text {
				printPlan(g, plan)
			}
			if plan.Empty() || dryRun {
				if !text {
					return writeData(g.stdout, f, applyOut{Plan: planJSON(doc, plan), DryRun: dryRun, Success: true})
				}
				if dryRun && !plan.Empty() {
					fmt.Fprintln(g.stdout, "\nDry run: nothing was changed.")
				}
				return nil
			}
			if !yes {
				if !confirm(g, fmt.Sprintf("\nApply %d %s?", len(plan.Ops), plural(len(plan.Ops), "change", "changes"))) {
					return &exitError{ExitError, errors.New("apply cancelled; nothing was changed")}
				}
			}
			if text {
				e.Events = progressPrinter(g)
				fmt.Fprintln(g.stdout)
			}
			start := time.Now()
			res := e.Apply(ctx, doc, plan)
			_ = recordLastApply(g.stateDir, doc.Hash(), res)
			if !text {
				if err := writeData(g.stdout, f, applyOut{Plan: planJSON(doc, plan), Result: res, Success: res.Success, Error: errString(res.Err)}); err != nil {
					return err
				}
				if !res.Success {
					return exitCode(ExitError)
				}
				return nil
			}
			return printResult(g, res, time.Since(start))
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	c.Flags().BoolVarP(&yes, "yes", "y", false, "apply without asking for confirmation")
	return c
}

type applyOut struct {
	Plan    planOut        `json:"plan"`
	DryRun  bool           `json:"dry_run,omitempty"`
	Result  *engine.Result `json:"result,omitempty"`
	Success bool           `json:"success"`
	Error   string         `json:"error,omitempty"`
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
		fmt.Fprintf(w, "\nVerifying... %s\n", pal.green("ok: the host matches the document"))
		fmt.Fprintf(w, "%s\n", pal.green(fmt.Sprintf("Applied %d %s in %s.", applied, plural(applied, "change", "changes"), roundDur(took))))
		return nil
	}
	if res.Verify.Error == "" && len(res.Verify.Mismatches) > 0 {
		fmt.Fprintf(w, "\nVerifying... %s\n", pal.red("FAILED"))
		for _, m := range res.Verify.Mismatches {
			fmt.Fprintf(w, "  %s.%s desired %s, current %s\n", m.Plugin, m.Path, show(m.Desired), show(m.Current))
		}
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

// lockStateDir takes an exclusive lock so two applies never interleave; the
// second is refused with the holder's pid.
func lockStateDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w (use --state-dir to pick another)", dir, err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("another op-dbus apply holds %s (pid %s); wait for it to finish", path, strings.TrimSpace(string(holder)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// recordLastApply keeps the last apply's result for people and scripts.
func recordLastApply(dir, hash string, res *engine.Result) error {
	b, err := json.MarshalIndent(struct {
		Time         time.Time      `json:"time"`
		DocumentHash string         `json:"document_hash"`
		Result       *engine.Result `json:"result"`
	}{time.Now().UTC(), hash, res}, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "last-apply.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "last-apply.json"))
}
