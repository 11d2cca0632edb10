package cli

import (
	"bufio"
	"maps"

	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

func newQueryCmd(g *globals) *cobra.Command {
	var only []string
	c := &cobra.Command{
		Use:   "query [-p PLUGIN]...",
		Short: "Print the live state of the host as a state document",
		Long: `Print the live state of every available plugin (or those named with -p) as a
state document. The output is itself a valid desired state: applying it to an
unchanged host plans nothing, and after an out-of-band change it plans exactly
the ops that restore what was captured.

Plugins whose service is absent on this host (no NetworkManager, no Open
vSwitch) are listed under "unavailable"; plugins that failed although their
service is there are listed under "errors". Both keys are ignored on input and
both are also said on stderr. The exit code is 1 when a plugin failed, or when
a plugin named with -p is unavailable; an unavailable plugin of a whole-host
query is only reported (exit 0).`,
		Example: `  op-dbus query > now.json
  op-dbus query -p systemd -o yaml
  op-dbus --user query -p systemd`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("json")
			if err != nil {
				return err
			}
			if f == "text" {
				f = "json"
			}
			svc, done := g.service()
			defer done()
			ctx, cancel := g.context()
			defer cancel()
			res, err := svc.Query(ctx, only)
			if err != nil {
				return &exitError{ExitError, err}
			}
			for _, n := range slices.Sorted(maps.Keys(res.Unavailable)) {
				fmt.Fprintf(g.stderr, "op-dbus: query: %s: %v\n", n, res.Failure(n))
			}
			for _, n := range slices.Sorted(maps.Keys(res.Errors)) {
				fmt.Fprintf(g.stderr, "op-dbus: query: %s: %v\n", n, res.Failure(n))
			}
			if err := writeData(g.stdout, f, res); err != nil {
				return err
			}
			if res.Err() != nil {
				return exitCode(ExitError)
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&only, "plugin", "p", nil, "query only this plugin (repeatable)")
	return c
}

// docRun is what diff, verify and apply share: the output format, the
// transaction service (and its engine) and the strictly decoded document.
type docRun struct {
	format string
	svc    *control.Service
	e      *engine.Engine
	doc    *state.Document
	close  func()
}

// openDoc reads a document; any problem is exit 1 with the problem named.
func (g *globals) openDoc(path string) (*docRun, error) {
	f, err := g.format("text")
	if err != nil {
		return nil, err
	}
	svc, done := g.service()
	doc, err := svc.Load(path)
	if err != nil {
		done()
		return nil, &exitError{ExitError, err}
	}
	return &docRun{format: f, svc: svc, e: svc.Engine(), doc: doc, close: done}, nil
}

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a state document without touching the host",
		Long: `Check a state document (JSON or YAML; - reads stdin) against the schema and
each plugin's rules. Prints every problem with its path and exits 1, or exits 0
when the document is valid. Nothing on the host is read or changed.`,
		Example: `  op-dbus validate host.json
  op-dbus validate -o json host.yaml`,
		Args: exactFile,
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			e, done := g.engine()
			defer done()
			doc, err := e.Load(args[0])
			type result struct {
				Valid    bool     `json:"valid"`
				Problems []string `json:"problems,omitempty"`
				Plugins  []string `json:"plugins,omitempty"`
				Hash     string   `json:"hash,omitempty"`
			}
			var r result
			if err != nil {
				r.Problems = problemList(err)
			} else {
				r.Valid = true
				r.Hash = doc.Hash()
				r.Plugins = slices.Sorted(maps.Keys(doc.Plugins))
			}
			if f != "text" {
				if err := writeData(g.stdout, f, r); err != nil {
					return err
				}
			} else if r.Valid {
				fmt.Fprintf(g.stdout, "%s: valid (plugins: %s)\n", args[0], strings.Join(r.Plugins, ", "))
			} else {
				for _, p := range r.Problems {
					fmt.Fprintln(g.stderr, p)
				}
			}
			if !r.Valid {
				return exitCode(ExitError)
			}
			return nil
		},
	}
}

// problemList spells out every problem of a load error, each prefixed with
// the file it is in.
func problemList(err error) []string {
	var ps state.Problems
	if asProblems(err, &ps) {
		prefix := strings.TrimSuffix(err.Error(), ps.Error())
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = prefix + p.Error()
		}
		return out
	}
	return []string{err.Error()}
}

func exactFile(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return &exitError{ExitError, fmt.Errorf("expected one state document (a file path, or - for stdin), got %d arguments", len(args))}
	}
	return nil
}

func newSchemaCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the state document",
		Long:  "Print the JSON Schema (draft 2020-12) of the state document, generated from the plugins' Go types.",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			e, done := g.engine()
			defer done()
			b, err := state.Schema(e.Types())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s\n", b)
			return err
		},
	}
}

func newPluginsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "plugins",
		Short: "List plugins and whether each can work on this host",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			e, done := g.engine()
			defer done()
			ctx, cancel := g.context()
			defer cancel()
			type row struct {
				Name      string `json:"name"`
				Available bool   `json:"available"`
				Reason    string `json:"reason,omitempty"`
			}
			rows := make([]row, len(e.Names()))
			errs := make(chan struct{}, len(rows))
			for i, n := range e.Names() {
				go func() {
					p, _ := e.Plugin(n)
					r := row{Name: n, Available: true}
					if err := p.Available(ctx); err != nil {
						r.Available, r.Reason = false, err.Error()
					}
					rows[i] = r
					errs <- struct{}{}
				}()
			}
			for range rows {
				<-errs
			}
			if f != "text" {
				return writeData(g.stdout, f, rows)
			}
			pal := g.colors()
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PLUGIN\tAVAILABLE\tREASON")
			for _, r := range rows {
				a := pal.green("yes")
				if !r.Available {
					a = pal.red("no ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, a, r.Reason)
			}
			return tw.Flush()
		},
	}
}

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

func show(v any) string { return plugin.Show(v) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
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

// confirm asks on the terminal; it is only called when stdin is one.
func confirm(g *globals, question string) bool {
	fmt.Fprintf(g.stdout, "%s [y/N] ", question)
	line, _ := bufio.NewReader(g.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}
