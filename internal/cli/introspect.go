package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/state"
)

func newIntrospectCmd(g *globals) *cobra.Command {
	var (
		bus         string
		services    []string
		activatable bool
		compare     bool
		parallel    int
		callTimeout time.Duration
		noValues    bool
	)
	c := &cobra.Command{
		Use:   "introspect [--bus system|session|ADDRESS] [--service NAME]...",
		Short: "Walk a whole D-Bus bus: objects, interfaces, members and property values",
		Long: `Walk every service on a bus (or those named with --service): the object tree,
each object's interfaces, methods, signals and annotations, and the current value
of every readable property, typed.

Services that are activatable but not running are listed, not started, unless
--activatable is given. A service that hangs, denies access or returns bad XML
is recorded with its error and the walk goes on; every call is bounded by
--call-timeout.

Output (-o): tree (default for people), json or yaml (stable and sorted, see
docs/introspection.md), paths (one "SERVICE PATH" per line, like busctl tree).

  op-dbus introspect --compare before.json after.json
prints what appeared (+), disappeared (-) and changed (~); exit 2 when anything
differs, 0 when nothing does.`,
		Example: `  op-dbus introspect --bus system --service org.freedesktop.hostname1
  op-dbus introspect --bus session -o json > before.json
  op-dbus introspect -o paths --service org.freedesktop.systemd1
  op-dbus introspect --compare before.json after.json`,
		RunE: func(_ *cobra.Command, args []string) error {
			if compare {
				return runCompare(g, args)
			}
			if len(args) > 0 {
				return &exitError{ExitError, fmt.Errorf("introspect takes no arguments (did you mean --service %s?)", args[0])}
			}
			f := g.output
			if f == "" || f == "text" {
				f = "tree"
			}
			switch f {
			case "tree", "json", "yaml", "paths":
			default:
				return &exitError{ExitError, fmt.Errorf("unknown output format %q for introspect (use tree, json, yaml or paths)", f)}
			}
			for _, s := range services {
				if !introspect.ValidBusName(s) {
					return &exitError{ExitError, fmt.Errorf("--service %q is not a valid bus name (like org.freedesktop.hostname1)", s)}
				}
			}
			b := dbusx.Bus(bus)
			if bus == "" {
				b = dbusx.System
				if g.user {
					b = dbusx.Session
				}
			}
			ctx, cancel := g.context()
			defer cancel()
			conn, err := dbusx.Open(ctx, b)
			if err != nil {
				return &exitError{ExitError, err}
			}
			defer conn.Close()
			w := &introspect.Walker{Conn: conn, Bus: string(b), Services: services, Activatable: activatable,
				Parallel: parallel, CallTimeout: callTimeout, NoValues: noValues}
			res, err := w.Walk(ctx)
			if err != nil {
				return &exitError{ExitError, fmt.Errorf("introspect %s: %w", b, err)}
			}
			switch f {
			case "json", "yaml":
				return writeData(g.stdout, f, res)
			case "paths":
				for _, s := range res.Services {
					for _, o := range s.Objects {
						fmt.Fprintf(g.stdout, "%s %s\n", s.Name, o.Path)
					}
				}
			default:
				printTree(g, res)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&bus, "bus", "", "system, session or a D-Bus address (default system; session with --user)")
	fl.StringSliceVar(&services, "service", nil, "walk only this service (repeatable)")
	fl.BoolVar(&activatable, "activatable", false, "also walk activatable services that are not running (this starts them)")
	fl.BoolVar(&compare, "compare", false, "compare two saved JSON introspections: --compare BEFORE AFTER")
	fl.IntVar(&parallel, "parallel", 32, "calls in flight at once")
	fl.DurationVar(&callTimeout, "call-timeout", 5*time.Second, "give up on one call after this long")
	fl.BoolVar(&noValues, "no-values", false, "skip reading property values")
	return c
}

func printTree(g *globals, res *introspect.Result) {
	pal := g.colors()
	w := g.stdout
	for _, s := range res.Services {
		head := pal.bold(s.Name)
		if s.Owner != "" && s.Owner != s.Name {
			head += pal.dim(" (" + s.Owner + ")")
		}
		switch {
		case s.NotWalked:
			head += pal.dim(" activatable, not running (walk with --activatable)")
		case s.Error != "":
			head += " " + pal.red("error: "+s.Error)
		}
		fmt.Fprintln(w, head)
		for _, o := range s.Objects {
			line := "  " + o.Path
			if o.Error != "" {
				line += " " + pal.red("error: "+o.Error)
			}
			fmt.Fprintln(w, line)
			for _, i := range o.Interfaces {
				fmt.Fprintf(w, "    %s", i.Name)
				if i.Error != "" {
					fmt.Fprintf(w, " %s", pal.red("error: "+i.Error))
				}
				fmt.Fprintln(w)
				for _, m := range i.Methods {
					in, out := argSigs(m.Args)
					fmt.Fprintf(w, "      .%s(%s)%s %s\n", m.Name, in, arrow(out), pal.dim("method"))
				}
				for _, sg := range i.Signals {
					in, _ := argSigs(sg.Args)
					fmt.Fprintf(w, "      .%s(%s) %s\n", sg.Name, in, pal.dim("signal"))
				}
				for _, p := range i.Properties {
					val := show(p.Value)
					if p.Error != "" {
						val = pal.red("error: " + p.Error)
					} else if p.Access == "write" {
						val = pal.dim("(write-only)")
					}
					fmt.Fprintf(w, "      .%s %s %s %s\n", p.Name, p.Type, val, pal.dim(p.Access))
				}
			}
		}
	}
	st := res.Stats
	fmt.Fprintf(w, "%s\n", pal.dim(fmt.Sprintf("%d services, %d objects, %d calls, %d errors in %.1f ms (%.0f objects/s)",
		st.Services, st.Objects, st.Calls, st.Errors, st.DurationMS, float64(st.Objects)/(st.DurationMS/1000+1e-9))))
}

func argSigs(args []introspect.Arg) (in, out string) {
	var i, o []string
	for _, a := range args {
		if a.Direction == "out" {
			o = append(o, a.Type)
		} else {
			i = append(i, a.Type)
		}
	}
	return strings.Join(i, ", "), strings.Join(o, ", ")
}

func arrow(out string) string {
	if out == "" {
		return ""
	}
	return " → " + out
}

func runCompare(g *globals, args []string) error {
	if len(args) != 2 {
		return &exitError{ExitError, fmt.Errorf("--compare takes two files: BEFORE.json AFTER.json (saved with introspect -o json)")}
	}
	var rs [2]*introspect.Result
	for i, p := range args {
		r, err := loadIntrospection(p)
		if err != nil {
			return &exitError{ExitError, err}
		}
		rs[i] = r
	}
	diffs := introspect.Compare(rs[0], rs[1])
	f, err := g.format("text")
	if err != nil {
		return err
	}
	if f != "text" {
		if diffs == nil {
			diffs = []introspect.Difference{}
		}
		if err := writeData(g.stdout, f, diffs); err != nil {
			return err
		}
	} else {
		pal := g.colors()
		if len(diffs) == 0 {
			fmt.Fprintln(g.stdout, pal.green("No differences."))
		}
		for _, d := range diffs {
			line := d.String()
			switch d.Kind {
			case "+":
				line = pal.green(line)
			case "-":
				line = pal.red(line)
			default:
				line = pal.yellow(line)
			}
			fmt.Fprintln(g.stdout, line)
		}
	}
	if len(diffs) > 0 {
		return exitCode(ExitChanges)
	}
	return nil
}

// loadIntrospection reads a saved JSON introspection strictly.
func loadIntrospection(path string) (*introspect.Result, error) {
	b, err := state.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r introspect.Result
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: not an op-dbus introspection (save one with `op-dbus introspect -o json`): %v", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: unexpected data after the introspection", path)
	}
	return &r, nil
}
