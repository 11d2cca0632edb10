package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/state"
)

func newDiffCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "diff FILE",
		Short: "Show what apply would change (exit 0 in sync, 2 changes, 1 error)",
		Long: `Query the plugins the document names and print the plan: the ops apply would
run, in order, with each field's current and desired value. Nothing is changed.

Exit codes: 0 the host matches, 2 there are changes, 1 error.`,
		Example: `  op-dbus diff host.json
  op-dbus diff -o json host.json | jq '.ops[].description'`,
		Args: exactFile,
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := g.openDoc(args[0])
			if err != nil {
				return err
			}
			defer r.close()
			f, e, doc := r.format, r.e, r.doc
			ctx, cancel := g.context()
			defer cancel()
			plan, err := e.Plan(ctx, doc)
			if err != nil {
				return &exitError{ExitError, err}
			}
			if f != "text" {
				if err := writeData(g.stdout, f, planJSON(doc, plan)); err != nil {
					return err
				}
			} else {
				printPlan(g, plan)
			}
			if !plan.Empty() {
				return exitCode(ExitChanges)
			}
			return nil
		},
	}
}

// planOut is the machine form of a plan.
type planOut struct {
	DocumentHash string   `json:"document_hash"`
	InSync       bool     `json:"in_sync"`
	Ops          []opJSON `json:"ops"`
}

type opJSON struct {
	ID          string          `json:"id"`
	Plugin      string          `json:"plugin"`
	Item        string          `json:"item"`
	Description string          `json:"description"`
	Data        json.RawMessage `json:"data,omitempty"`
	Reversible  bool            `json:"reversible"`
	DependsOn   []string        `json:"depends_on,omitempty"`
	Changes     any             `json:"changes,omitempty"`
}

func planJSON(doc *state.Document, p *engine.Plan) planOut {
	out := planOut{DocumentHash: doc.Hash(), InSync: p.Empty(), Ops: []opJSON{}}
	for _, op := range p.Ops {
		out.Ops = append(out.Ops, opJSON{op.ID, op.Plugin, op.Item, op.Description, op.Data, op.Reversible, op.DependsOn, op.Changes})
	}
	return out
}

func printPlan(g *globals, p *engine.Plan) {
	pal := g.colors()
	w := g.stdout
	if p.Empty() {
		fmt.Fprintln(w, pal.green("No changes: the host matches the document."))
		return
	}
	counts := map[string]int{}
	var order []string
	for _, op := range p.Ops {
		if counts[op.Plugin] == 0 {
			order = append(order, op.Plugin)
		}
		counts[op.Plugin]++
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s %d", n, counts[n]))
	}
	fmt.Fprintf(w, "%s %s\n", pal.bold(fmt.Sprintf("Plan: %d %s", len(p.Ops), plural(len(p.Ops), "change", "changes"))), pal.dim("("+strings.Join(parts, ", ")+")"))
	last := ""
	for _, op := range p.Ops {
		if op.Plugin != last {
			fmt.Fprintf(w, "\n  %s\n", pal.bold(op.Plugin))
			last = op.Plugin
		}
		mark := pal.yellow("~")
		if !op.Reversible {
			mark = pal.red("!")
		}
		fmt.Fprintf(w, "    %s %s\n", mark, op.Description)
		for _, c := range op.Changes {
			fmt.Fprintf(w, "        %s %s %s %s\n", pal.dim(c.Path+":"), show(c.Current), pal.dim("→"), show(c.Desired))
		}
	}
	if slices.ContainsFunc(p.Ops, func(o opT) bool { return !o.Reversible }) {
		fmt.Fprintf(w, "\n  %s marks a change that rollback cannot undo.\n", pal.red("!"))
	}
}

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE",
		Short: "Check that the host matches a document (exit 0 match, 2 mismatches, 1 error)",
		Long: `Query the plugins the document names and list every field that differs from
the document, as desired vs current. Nothing is changed.

Exit codes: 0 the host matches, 2 mismatches (each listed), 1 error.`,
		Args: exactFile,
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := g.openDoc(args[0])
			if err != nil {
				return err
			}
			defer r.close()
			f, e, doc := r.format, r.e, r.doc
			ctx, cancel := g.context()
			defer cancel()
			e.VerifyAttempts = 1
			v := e.Verify(ctx, doc)
			if v.Error != "" {
				return &exitError{ExitError, fmt.Errorf("verify: %s", v.Error)}
			}
			if f != "text" {
				if v.Mismatches == nil {
					v.Mismatches = []engine.Mismatch{}
				}
				if err := writeData(g.stdout, f, v); err != nil {
					return err
				}
			} else {
				pal := g.colors()
				if v.OK {
					fmt.Fprintln(g.stdout, pal.green("OK: the host matches the document."))
				} else {
					fmt.Fprintf(g.stdout, "%s\n", pal.red(fmt.Sprintf("%d %s:", len(v.Mismatches), plural(len(v.Mismatches), "mismatch", "mismatches"))))
					for _, m := range v.Mismatches {
						fmt.Fprintf(g.stdout, "  %s.%s desired %s, current %s\n", m.Plugin, m.Path, show(m.Desired), show(m.Current))
					}
				}
			}
			if !v.OK {
				return exitCode(ExitChanges)
			}
			return nil
		},
	}
}
