package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/state"
)

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
